//! The single output line and the exit code, written exactly once per process.
//!
//! Both the main path and the deadline watchdog end in [`finish`]; a mutex
//! makes sure only the first one prints, and it exits the process while
//! still holding it.

use pullgate_wire::{FailurePolicy, Verdict};
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Longest output line, newline included.
pub const MAX_LINE_BYTES: usize = 1024;

static DONE: Mutex<()> = Mutex::new(());
static LABEL: OnceLock<String> = OnceLock::new();

/// Records `REF@DIGEST` for the watchdog's line once the arguments are known.
pub fn set_label(label: &str) {
    let _ = LABEL.set(label.to_string());
}

/// What to print and how to exit.
pub struct Outcome {
    verdict: Verdict,
    line: String,
}

impl Outcome {
    /// A decision the verifier made itself (bad input, bootstrap allowlist).
    pub fn local(verdict: Verdict, label: Option<&str>, reason: String) -> Outcome {
        let label = label.unwrap_or("image");
        Outcome { verdict, line: format!("pullgate: {} {label}: {reason}", verdict.past_tense()) }
    }

    /// A decision the agent made.
    pub fn agent(verdict: Verdict, label: &str, reason: String, report_id: String) -> Outcome {
        Outcome { verdict, line: format!("pullgate: {} {label}: {reason} (report {report_id})", verdict.past_tense()) }
    }

    /// No decision could be reached: the failure policy decides.
    pub fn failure(policy: FailurePolicy, label: &str, why: String) -> Outcome {
        let verdict = policy.verdict();
        Outcome {
            verdict,
            line: format!("pullgate: {} {label}: {why}; failure policy {}", verdict.past_tense(), policy.as_str()),
        }
    }
}

/// Prints the outcome's line and exits: 0 to allow, 1 to deny.
pub fn finish(outcome: Outcome) -> ! {
    let guard = DONE.lock();
    let line = sanitize(&outcome.line);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
    drop(guard);
    std::process::exit(match outcome.verdict {
        Verdict::Allow => 0,
        Verdict::Deny => 1,
    })
}

/// Starts a thread that applies the failure policy at `deadline` unless the
/// process has already exited.
pub fn start_watchdog(deadline: Instant, policy: FailurePolicy) {
    let spawned = std::thread::Builder::new().name("deadline".into()).stack_size(64 * 1024).spawn(move || {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        let label = LABEL.get().map(String::as_str).unwrap_or("image");
        finish(Outcome::failure(policy, label, "no decision within the verifier deadline".into()));
    });
    if spawned.is_err() {
        // Without a watchdog the socket timeouts still bound the wait; carry on.
    }
}

/// One printable line: control characters become spaces, the line is cut at
/// a character boundary to fit [`MAX_LINE_BYTES`] with its newline.
fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_LINE_BYTES));
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_LINE_BYTES - 4 {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_bounds_and_flattens() {
        let s = sanitize(&format!("a\nb\x1b{}", "é".repeat(2000)));
        assert!(s.len() <= MAX_LINE_BYTES, "{}", s.len());
        assert!(s.starts_with("a b "));
        assert_eq!(s.matches('\n').count(), 1);
        assert!(s.ends_with("…\n"));
    }
}
