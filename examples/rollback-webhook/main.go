// Command rollback-webhook turns modelgate's verdicts into rollout actions:
// it receives Alertmanager's notification for a regressed candidate version
// and rolls it back, and it answers Flagger's webhooks with the verdict.
//
//	rollback-webhook -collector http://modelgate.observability:9464 \
//	  -token-file /etc/modelgate/token/token -exec /usr/local/bin/rollback
//
// POST /hooks/modelgate-regression (Alertmanager's webhook_config, the route
// of examples/prometheus/alertmanager.yml, grouped by service_name and
// candidate_version): a firing group is one candidate version of one
// service. It asks modelgate for the current verdict first, so a stale or
// repeated notification does not act on a version modelgate no longer
// flags; when modelgate cannot be asked, the alert alone is the evidence
// and the rollback goes ahead. The action is the -exec command, run with the
// service, the candidate and the baseline version as its arguments (for
// example `kubectl argo rollouts abort`, or a patch of the edge filter's
// canary_percent); without -exec it only logs the rollback it would do. A
// candidate is acted on once until its alerts resolve. A failed command is
// answered 500, so Alertmanager sends the notification again.
//
// POST /hooks/flagger-verdict (a Flagger webhook; metadata: service,
// candidate): 200 when modelgate's verdict is PASS, 412 with the verdict
// otherwise, 502 when modelgate cannot be asked. As a confirm-promotion
// webhook it holds the promotion until the candidate passed.
//
// It never trusts its input: bodies are capped, malformed ones are answered
// 400 naming what is wrong, and nothing here can panic on a request.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// The largest body read: Alertmanager groups of hundreds of alerts fit.
const maxBody = 1 << 20

// How long the rollback command may run.
const execTimeout = 30 * time.Second

// Outcomes of modelgate's verdict API (the VerdictOutcome enum's JSON names).
const (
	outcomePass       = "VERDICT_OUTCOME_PASS"
	outcomeRegression = "VERDICT_OUTCOME_REGRESSION"
)

// alertmanagerMessage is Alertmanager's webhook payload, version 4.
type alertmanagerMessage struct {
	Version     string            `json:"version"`
	Status      string            `json:"status"`
	Receiver    string            `json:"receiver"`
	GroupKey    string            `json:"groupKey"`
	GroupLabels map[string]string `json:"groupLabels"`
	Alerts      []struct {
		Status string            `json:"status"`
		Labels map[string]string `json:"labels"`
	} `json:"alerts"`
}

// flaggerPayload is what Flagger POSTs to a webhook.
type flaggerPayload struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Phase     string            `json:"phase"`
	Metadata  map[string]string `json:"metadata"`
}

// target is one candidate version of one service.
type target struct{ service, candidate string }

type server struct {
	collector *url.URL
	token     string
	client    *http.Client
	command   []string

	// Serializes actions: a rollback runs once even when notifications for
	// the same group arrive together.
	mu sync.Mutex
	// Candidates rolled back and not resolved since, each with its baseline.
	acted map[target]string
}

// verdict asks modelgate for its verdict on the target.
func (s *server) verdict(ctx context.Context, t target) (string, error) {
	u := s.collector.JoinPath("/api/v1/verdict")
	u.RawQuery = url.Values{"service": {t.service}, "candidate": {t.candidate}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: HTTP %d: %s", u.Redacted(), resp.StatusCode, bytes.TrimSpace(body))
	}
	var answer struct {
		Outcome string `json:"outcome"`
	}
	if err := json.Unmarshal(body, &answer); err != nil || answer.Outcome == "" {
		return "", fmt.Errorf("%s: no verdict outcome in the answer (%v)", u.Redacted(), err)
	}
	return answer.Outcome, nil
}

// decode reads a JSON body of at most maxBody bytes into v.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return false
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(v); err != nil {
		http.Error(w, "body is not the expected JSON: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func (s *server) alertmanager(w http.ResponseWriter, r *http.Request) {
	var msg alertmanagerMessage
	if !decode(w, r, &msg) {
		return
	}
	if msg.Version != "4" {
		http.Error(w, fmt.Sprintf("webhook payload version %q, this receiver reads version 4", msg.Version), http.StatusBadRequest)
		return
	}
	t := target{msg.GroupLabels["service_name"], msg.GroupLabels["candidate_version"]}
	if t.service == "" || t.candidate == "" {
		http.Error(w, "groupLabels lack service_name or candidate_version: route ModelgateRegression with group_by: [service_name, candidate_version]", http.StatusBadRequest)
		return
	}
	baseline, rules := "", map[string]bool{}
	for _, alert := range msg.Alerts {
		if alert.Status == "firing" {
			if baseline == "" {
				baseline = alert.Labels["baseline_version"]
			}
			rules[alert.Labels["endpoint"]+" "+alert.Labels["rule"]] = true
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	switch msg.Status {
	case "resolved":
		if _, ok := s.acted[t]; ok {
			delete(s.acted, t)
			log.Printf("resolved: modelgate no longer flags %s %s", t.service, t.candidate)
		}
		w.WriteHeader(http.StatusOK)
		return
	case "firing":
	default:
		http.Error(w, fmt.Sprintf("status %q is neither firing nor resolved", msg.Status), http.StatusBadRequest)
		return
	}
	if previous, ok := s.acted[t]; ok {
		log.Printf("%s %s already rolled back to %s; notification %s ignored", t.service, t.candidate, previous, msg.GroupKey)
		w.WriteHeader(http.StatusOK)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	outcome, err := s.verdict(ctx, t)
	switch {
	case err != nil:
		log.Printf("cannot ask modelgate about %s %s (%v): acting on the alert alone", t.service, t.candidate, err)
	case outcome != outcomeRegression:
		log.Printf("not rolling back %s %s: modelgate's verdict is now %s", t.service, t.candidate, outcome)
		w.WriteHeader(http.StatusOK)
		return
	}
	log.Printf("rolling back %s %s to %s (%d alerts firing: %s)", t.service, t.candidate, orUnknown(baseline),
		len(rules), strings.Join(slices.Sorted(maps.Keys(rules)), ", "))
	if err := s.rollBack(ctx, t, baseline); err != nil {
		log.Printf("rollback of %s %s failed: %v", t.service, t.candidate, err)
		http.Error(w, "rollback failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	s.acted[t] = orUnknown(baseline)
	w.WriteHeader(http.StatusOK)
}

// rollBack runs the -exec command (or, without one, only says what it would do).
func (s *server) rollBack(ctx context.Context, t target, baseline string) error {
	if len(s.command) == 0 {
		log.Printf("dry run (no -exec): would roll %s back from %s to %s", t.service, t.candidate, orUnknown(baseline))
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, execTimeout)
	defer cancel()
	args := append(append([]string{}, s.command[1:]...), t.service, t.candidate, baseline)
	out, err := exec.CommandContext(ctx, s.command[0], args...).CombinedOutput()
	if len(out) > 0 {
		log.Printf("%s: %s", s.command[0], bytes.TrimSpace(out))
	}
	return err
}

func (s *server) flagger(w http.ResponseWriter, r *http.Request) {
	var payload flaggerPayload
	if !decode(w, r, &payload) {
		return
	}
	t := target{payload.Metadata["service"], payload.Metadata["candidate"]}
	if t.service == "" || t.candidate == "" {
		http.Error(w, "webhook metadata needs service and candidate", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	outcome, err := s.verdict(ctx, t)
	if err != nil {
		http.Error(w, "cannot ask modelgate: "+err.Error(), http.StatusBadGateway)
		return
	}
	log.Printf("flagger %s %s.%s: %s %s is %s", payload.Phase, payload.Name, payload.Namespace, t.service, t.candidate, outcome)
	if outcome != outcomePass {
		http.Error(w, fmt.Sprintf("%s %s: %s", t.service, t.candidate, outcome), http.StatusPreconditionFailed)
		return
	}
	fmt.Fprintf(w, "%s %s: %s\n", t.service, t.candidate, outcome)
}

func orUnknown(version string) string {
	if version == "" {
		return "the previous version"
	}
	return version
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	collector := flag.String("collector", "http://127.0.0.1:9464", "modelgate's admin URL (the verdict API)")
	tokenFile := flag.String("token-file", "", "file holding modelgate's bearer token")
	caFile := flag.String("ca-file", "", "PEM CA certificates to trust for an https collector")
	command := flag.String("exec", "", "rollback command, run with SERVICE CANDIDATE BASELINE appended (unset: log only)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see -help)", flag.Arg(0))
	}
	base, err := url.Parse(*collector)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return fmt.Errorf("-collector %q: not an http:// or https:// URL", *collector)
	}
	s := &server{collector: base, command: strings.Fields(*command), acted: map[target]string{}}
	if *tokenFile != "" {
		token, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("-token-file: %w", err)
		}
		if s.token = strings.TrimSpace(string(token)); s.token == "" {
			return fmt.Errorf("-token-file %s is empty", *tokenFile)
		}
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("-ca-file %s: no PEM certificate in it", *caFile)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	s.client = &http.Client{Transport: transport, Timeout: 10 * time.Second}

	mux := http.NewServeMux()
	mux.HandleFunc("/hooks/modelgate-regression", s.alertmanager)
	mux.HandleFunc("/hooks/flagger-verdict", s.flagger)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	server := &http.Server{
		Addr:              *listen,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// A rollback command may take execTimeout.
		WriteTimeout: execTimeout + 20*time.Second,
	}
	log.Printf("rollback-webhook listening on %s, collector %s, exec %q", *listen, base.Redacted(), *command)
	if err := server.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "rollback-webhook:", err)
		os.Exit(2)
	}
}
