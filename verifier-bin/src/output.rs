//! The single output line and the exit code, written exactly once per process.
//!
//! Both the main path and the deadline watchdog end in [`finish`]; a mutex
//! makes sure only the first one prints, and it exits the process while
//! still holding it.

use pullgate_wire::{FailurePolicy, Verdict};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Longest output line, newline included.
pub const MAX_LINE_BYTES: usize = 1024;

static DONE: Mutex<()> = Mutex::new(());
static LABEL: OnceLock<String> = OnceLock::new();
/// The watchdog's deadline in milliseconds after start, and its policy; set
/// from the config once it is read (the watchdog runs before that).
static DEADLINE_MS: AtomicU64 = AtomicU64::new(pullgate_wire::DEFAULT_DEADLINE_MS);
static FAIL_OPEN: AtomicBool = AtomicBool::new(false);

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
    // Held until the process exits: whoever gets here second never prints.
    let _guard = DONE.lock();
    let line = sanitize(&outcome.line);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
    std::process::exit(match outcome.verdict {
        Verdict::Allow => 0,
        Verdict::Deny => 1,
    })
}

/// Starts the thread that answers at the deadline if the main path has not.
/// It runs before the config is read (a config on a hung mount must not hang
/// the verifier past containerd's timeout, which would always block the pull),
/// with the default deadline and fail-closed until [`configure_watchdog`].
/// If the thread cannot be started nothing would bound the wait: deny now.
pub fn start_watchdog(started: Instant) {
    let spawned = std::thread::Builder::new().name("deadline".into()).stack_size(64 * 1024).spawn(move || {
        loop {
            let deadline = started + Duration::from_millis(DEADLINE_MS.load(Ordering::SeqCst));
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
        let policy = if FAIL_OPEN.load(Ordering::SeqCst) { FailurePolicy::Open } else { FailurePolicy::Closed };
        let label = LABEL.get().map(String::as_str).unwrap_or("image");
        finish(Outcome::failure(policy, label, "no decision within the verifier deadline".into()));
    });
    if let Err(e) = spawned {
        finish(Outcome::local(Verdict::Deny, None, format!("cannot start the deadline watchdog ({e}); denying")));
    }
}

/// Gives the watchdog the configured deadline and failure policy.
pub fn configure_watchdog(deadline_ms: u64, policy: FailurePolicy) {
    FAIL_OPEN.store(policy == FailurePolicy::Open, Ordering::SeqCst);
    DEADLINE_MS.store(deadline_ms, Ordering::SeqCst);
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
