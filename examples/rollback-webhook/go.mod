module modelgate/examples/rollback-webhook

go 1.26
