//! Logs and metrics: the host calls that record them, and what a test reads
//! back (log lines, counter values, histogram samples).
//!
//! Like Envoy, every `proxy_define_metric` is a new metric with a new id, so
//! a test can tell when the filter defines one name twice.

use crate::host::Host;
use crate::memory::{enter, read_str, write, Ctx, BAD_ARGUMENT, NOT_FOUND, OK};
use crate::state::State;
use wasmtime::Linker;

/// One log line of the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// ABI level (0 trace .. 5 critical); 9 for WASI stdout/stderr.
    pub level: u32,
    /// The message.
    pub message: String,
}

/// A metric the filter defined.
#[derive(Debug, Clone)]
pub struct Metric {
    /// Its name.
    pub name: String,
    /// 0 counter, 1 gauge, 2 histogram.
    pub kind: u32,
    /// Counter or gauge value.
    pub value: u64,
    /// Values recorded into a histogram.
    pub samples: Vec<u64>,
}

/// Defines the logging and metric calls.
pub(crate) fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    link_log(linker)?;
    link_define(linker)?;
    link_update(linker)
}

fn link_log(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: Ctx<'_>, level: u32, ptr: u32, len: u32| {
            enter!(c, "proxy_log");
            let message = read_str(&mut c, ptr, len)?;
            c.data_mut().logs.push(LogLine { level, message });
            Ok(OK)
        },
    )?;
    linker.func_wrap("env", "proxy_get_log_level", |mut c: Ctx<'_>, ret: u32| {
        enter!(c, "proxy_get_log_level");
        write(&mut c, ret, &1u32.to_le_bytes())?;
        Ok(OK)
    })?;
    Ok(())
}

fn link_define(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Ctx<'_>, kind: u32, np: u32, nl: u32, ret: u32| {
            enter!(c, "proxy_define_metric");
            let name = read_str(&mut c, np, nl)?;
            let metrics = &mut c.data_mut().metrics;
            // Like Envoy: every definition is a new metric with a new id.
            let id = u32::try_from(metrics.len())?;
            metrics.push(Metric {
                name,
                kind,
                value: 0,
                samples: Vec::new(),
            });
            write(&mut c, ret, &id.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Ctx<'_>, id: u32, ret: u32| {
            enter!(c, "proxy_get_metric");
            let Some(value) = c.data().metrics.get(id as usize).map(|m| m.value) else {
                return Ok(NOT_FOUND);
            };
            write(&mut c, ret, &value.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    Ok(())
}

fn link_update(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut c: Ctx<'_>, id: u32, offset: i64| {
            enter!(c, "proxy_increment_metric");
            let Some(metric) = c.data_mut().metrics.get_mut(id as usize) else {
                return Ok(NOT_FOUND);
            };
            if metric.kind == 2 {
                return Ok(BAD_ARGUMENT);
            }
            metric.value = metric.value.saturating_add_signed(offset);
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |mut c: Ctx<'_>, id: u32, value: u64| {
            enter!(c, "proxy_record_metric");
            let Some(metric) = c.data_mut().metrics.get_mut(id as usize) else {
                return Ok(NOT_FOUND);
            };
            if metric.kind == 2 {
                metric.samples.push(value);
            } else {
                metric.value = value;
            }
            Ok(OK)
        },
    )?;
    Ok(())
}

impl Host {
    /// Every metric defined, in definition order (id = index).
    pub fn metrics(&self) -> &[Metric] {
        &self.store.data().metrics
    }

    /// The value of the counter `name` (the last definition of that name).
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.metrics()
            .iter()
            .rev()
            .find(|m| m.name == name && m.kind == 0)
            .map(|m| m.value)
    }

    /// The samples of the histogram `name`.
    pub fn histogram(&self, name: &str) -> Option<&[u64]> {
        self.metrics()
            .iter()
            .rev()
            .find(|m| m.name == name && m.kind == 2)
            .map(|m| m.samples.as_slice())
    }

    /// The filter's log lines so far.
    pub fn logs(&self) -> &[LogLine] {
        &self.store.data().logs
    }

    /// Forgets the log lines so far (long runs).
    pub fn clear_logs(&mut self) {
        self.store.data_mut().logs.clear();
    }

    /// Whether some log line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.logs().iter().any(|l| l.message.contains(text))
    }
}
