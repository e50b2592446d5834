//! What cocoon-verify prints, and the small input helpers its commands share.

use std::process::ExitCode;

use cocoon_attestation::Verdict;

/// `println!` that ignores a closed stdout (`cocoon-verify … | head`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
pub(crate) use say;

pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("'{s}' is not an RFC 3339 time ({e})"))
}

/// Reads an input file; a failure is a usage error (exit 2).
pub fn read_input(path: &std::path::Path, what: &str) -> Result<Vec<u8>, ExitCode> {
    std::fs::read(path).map_err(|e| {
        eprintln!("cocoon-verify: cannot read {what} {}: {e}", path.display());
        ExitCode::from(2)
    })
}

pub fn report_verdict(verdict: &Verdict, json: bool, source: &str) -> ExitCode {
    if json {
        say!("{}", serde_json::to_string(verdict).unwrap_or_default());
    } else {
        print_verdict_text(verdict, source);
    }
    finish(source, &verdict.errors, verdict.verified)
}

/// The text summary of a verdict (failed checks go to stderr with [`finish`]).
pub fn print_verdict_text(verdict: &Verdict, source: &str) {
    let state = state_word(verdict.verified);
    let sim = if verdict.simulated {
        " (SIMULATED: development root, no TEE)"
    } else {
        ""
    };
    say!("{source}: {state}{sim}");
    say!("  tee            {}", verdict.tee);
    if let Some(s) = &verdict.tcb_status {
        say!("  tcb status     {s}");
    }
    if let Some(d) = verdict.debug {
        say!("  debug          {}", if d { "ON" } else { "off" });
    }
    for (k, v) in &verdict.measurements {
        say!("  {k:<14} {v}");
    }
    if let Some(rd) = &verdict.report_data {
        say!("  report data    {rd}");
    }
    if !verdict.advisories.is_empty() {
        say!("  advisories     {}", verdict.advisories.join(", "));
    }
    for (k, v) in &verdict.details {
        say!("  {k:<14} {v}");
    }
}

/// The word a text summary starts with.
pub fn state_word(verified: bool) -> &'static str {
    if verified {
        "VERIFIED"
    } else {
        "REFUSED"
    }
}

/// Prints every failed check on stderr; exit 0 when verified, 1 when refused.
pub fn finish(source: &str, errors: &[String], verified: bool) -> ExitCode {
    for e in errors {
        eprintln!("cocoon-verify: {source}: {e}");
    }
    if verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
