//! The single output line and the exit code, written exactly once per process.
//!
//! Both the main path and the deadline watchdog end in [`finish`]; a mutex
//! makes sure only the first one prints, and it exits the process while
//! still holding it.

use pullgate_wire::{FailurePolicy, Verdict, one_line, truncate};
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

/// What to print and how to exit. The line is `head`, `reason`, `tail`:
/// when it is too long, the reason is cut so the verdict, the image and the
/// report id always show.
pub struct Outcome {
    verdict: Verdict,
    head: String,
    reason: String,
    tail: String,
}

impl Outcome {
    /// A decision the verifier made itself (bad input, bootstrap allowlist,
    /// an agent answer it cannot use).
    pub fn local(verdict: Verdict, label: Option<&str>, reason: String) -> Outcome {
        let label = label.unwrap_or("image");
        Outcome { verdict, head: format!("pullgate: {} {label}: ", verdict.past_tense()), reason, tail: String::new() }
    }

    /// A decision the agent made.
    pub fn agent(verdict: Verdict, label: &str, reason: String, report_id: String) -> Outcome {
        Outcome {
            verdict,
            head: format!("pullgate: {} {label}: ", verdict.past_tense()),
            reason,
            tail: format!(" (report {report_id})"),
        }
    }

    /// No decision could be reached: the failure policy decides.
    pub fn failure(policy: FailurePolicy, label: &str, why: String) -> Outcome {
        let verdict = policy.verdict();
        Outcome {
            verdict,
            head: format!("pullgate: {} {label}: ", verdict.past_tense()),
            reason: why,
            tail: format!("; failure policy {}", policy.as_str()),
        }
    }
}

/// Prints the outcome's line and exits: 0 to allow, 1 to deny.
pub fn finish(outcome: Outcome) -> ! {
    // Held until the process exits: whoever gets here second never prints.
    let _guard = DONE.lock();
    let line = sanitize(&outcome.head, &outcome.reason, &outcome.tail);
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

/// One printable line of at most [`MAX_LINE_BYTES`] with its newline:
/// control characters and line separators become spaces, and a line that is
/// too long loses the end of its reason (marked `…`), not its tail.
fn sanitize(head: &str, reason: &str, tail: &str) -> String {
    const CUT: &str = "…";
    let budget = MAX_LINE_BYTES - 1;
    let (head, reason, tail) = (one_line(head), one_line(reason), one_line(tail));
    let mut out = if head.len() + reason.len() + tail.len() <= budget {
        format!("{head}{reason}{tail}")
    } else if head.len() + tail.len() + CUT.len() <= budget {
        let room = budget - head.len() - tail.len();
        format!("{head}{}{tail}", truncate(&reason, room, CUT))
    } else {
        truncate(&format!("{head}{reason}{tail}"), budget, CUT)
    };
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_bounds_and_flattens() {
        let s = sanitize("", &format!("a\nb\x1b{}", "é".repeat(2000)), "");
        assert!(s.len() <= MAX_LINE_BYTES, "{}", s.len());
        assert!(s.starts_with("a b "));
        assert_eq!(s.matches('\n').count(), 1);
        assert!(s.ends_with("…\n"));
    }

    #[test]
    fn a_long_reason_keeps_the_report_id() {
        let o = Outcome::agent(
            Verdict::Deny,
            "ghcr.io/acme/app:1@sha256:ab",
            format!("plugin \u{2028}{}\r\n", "\"\\\u{0}é".repeat(40_000)),
            "d-1-2".into(),
        );
        let s = sanitize(&o.head, &o.reason, &o.tail);
        assert!(s.len() <= MAX_LINE_BYTES, "{}", s.len());
        assert!(s.starts_with("pullgate: denied ghcr.io/acme/app:1@sha256:ab: plugin "), "{s}");
        assert!(s.ends_with("… (report d-1-2)\n"), "{s}");
        assert_eq!(s.matches('\n').count(), 1);
        assert!(!s.contains(['\r', '\0', '\u{2028}']));
        let short = Outcome::failure(FailurePolicy::Open, "x", "agent unavailable".into());
        assert_eq!(
            sanitize(&short.head, &short.reason, &short.tail),
            "pullgate: allowed x: agent unavailable; failure policy open\n"
        );
    }
}
