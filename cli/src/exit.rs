//! The `modelgate` binary's exit codes: one table for every subcommand, so a
//! CI step or a rollout controller can tell a regression from a broken
//! setup without reading stderr.
//!
//! 0, 1 and 2 are answers (pass, regression, inconclusive); the others are
//! the BSD `sysexits.h` codes for "could not answer", each naming what to
//! fix: the command line, the collector's address, the credentials, or a
//! configuration file. No failure ever exits 0, 1 or 2: a script that acts
//! on a regression never acts on a typo.

/// Why the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done: the gate passed, no version regressed, everything was sent.
    Ok,
    /// A regression (`gate`, `analyze`); for `replay` and `loadgen`, spans
    /// that could not be sent.
    Regression,
    /// `gate`: the collector could not tell within `--wait` (too little
    /// traffic, or a candidate it never saw).
    Inconclusive,
    /// A flag, argument or value the command cannot use (`EX_USAGE`),
    /// including an override the collector refused (`--sla 0ms`).
    Usage,
    /// The collector could not be reached, the TLS handshake failed, or the
    /// address is not its query API, e.g. the admin port (`EX_UNAVAILABLE`).
    Connection,
    /// Anything else that stopped the command (`EX_SOFTWARE`), e.g. a listen
    /// address already in use or an unreadable input file.
    Failure,
    /// The collector refused the credentials: no token, a wrong token, or a
    /// client certificate it does not accept (`EX_NOPERM`).
    Authentication,
    /// The configuration is invalid: the collector's (file, `MODELGATE_*`
    /// variables, listen flags) or a client's token, CA or certificate file
    /// (`EX_CONFIG`).
    Configuration,
}

impl Exit {
    /// Every code, in numeric order.
    pub const ALL: [Exit; 8] = [
        Exit::Ok,
        Exit::Regression,
        Exit::Inconclusive,
        Exit::Usage,
        Exit::Connection,
        Exit::Failure,
        Exit::Authentication,
        Exit::Configuration,
    ];

    /// The process exit status.
    pub const fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Regression => 1,
            Exit::Inconclusive => 2,
            Exit::Usage => 64,
            Exit::Connection => 69,
            Exit::Failure => 70,
            Exit::Authentication => 77,
            Exit::Configuration => 78,
        }
    }

    /// 1 when `regressed`, else 0.
    pub const fn regression_if(regressed: bool) -> Self {
        if regressed {
            Exit::Regression
        } else {
            Exit::Ok
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

/// The exit codes as `modelgate --help` and `modelgate gate --help` show them.
pub const HELP: &str = "\
EXIT CODES
  0   pass: gate passed, analyze found no regression, replay/loadgen sent everything
      (a regression milder than --fail-on, warning under the default, is printed)
  1   regression at --fail-on severity (critical by default) (gate, analyze);
      replay/loadgen: some spans could not be sent
  2   inconclusive (gate): too little traffic within --wait, an unknown
      candidate, or no baseline distinct from it
  64  usage: a bad flag, argument or value (also an override the collector refused)
  69  connection: collector unreachable, TLS handshake failed, or not its gRPC
      query API (e.g. the admin port)
  70  any other failure (e.g. a listen address in use, an unreadable input file)
  77  authentication: token missing or refused, client certificate refused
  78  configuration: invalid configuration file, MODELGATE_* variable or listen
      flag; unreadable --token-file, --ca-file, --client-cert or --client-key";

/// The one line a failure prints: the error and its causes, each said
/// once (`a: b: c`; many errors repeat their cause's words in their own).
pub fn message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        // hyper and tonic repeat their cause's words; say them once.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_all_documented() {
        let mut codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), Exit::ALL.len(), "{codes:?}");
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "in order: {codes:?}");
        let documented: Vec<u8> = HELP
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        assert_eq!(documented, codes);
    }

    #[test]
    fn answers_are_not_failures() {
        assert_eq!(Exit::regression_if(true), Exit::Regression);
        assert_eq!(Exit::regression_if(false), Exit::Ok);
        for failure in [
            Exit::Usage,
            Exit::Connection,
            Exit::Failure,
            Exit::Authentication,
            Exit::Configuration,
        ] {
            assert!(failure.code() > 2, "{failure:?}");
        }
    }

    #[test]
    fn chains_are_told_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("transport error")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(message(&e), "transport error: connection refused");
    }
}
