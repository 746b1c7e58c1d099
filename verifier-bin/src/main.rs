//! `pullgate-verifier`: the binary containerd's bindir image-verifier plugin execs on every pull.
//!
//! Contract (see `CONTAINERD.md`): argv is
//! `-name REF -digest DIGEST -stdin-media-type application/vnd.oci.descriptor.v1+json`,
//! stdin holds the top-level descriptor as JSON. Exit 0 allows the pull, any
//! other exit denies it, and stdout (one line) is shown to the user.
//!
//! The binary validates its input, checks the bootstrap allowlist, asks the
//! agent over its Unix socket and prints exactly one line. It never outlives
//! its deadline: a watchdog thread applies the failure policy if the main path
//! has not decided in time. It uses no allocator-heavy or async machinery so
//! that an exec costs little more than exec'ing a no-op binary.

mod args;
mod output;

use output::{Outcome, finish};
use pullgate_reference::{Digest, Reference};
use pullgate_wire::{
    CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, DecisionResponse, Descriptor, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
    OCI_DESCRIPTOR_MEDIA_TYPE, PROTOCOL_VERSION, Request, Response, Verdict, VerifierConfig, VerifyRequest,
};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Largest descriptor accepted on stdin.
const MAX_STDIN_BYTES: usize = 64 * 1024;
/// Time kept back from the agent's budget so its answer still arrives in time.
const REPLY_MARGIN: Duration = Duration::from_millis(100);

fn main() {
    let started = Instant::now();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if argv.len() == 1 && argv[0] == "--version" {
        println!("pullgate-verifier {} protocol {PROTOCOL_VERSION}", env!("CARGO_PKG_VERSION"));
        std::process::exit(0);
    }

    output::start_watchdog(started);
    let config_path =
        std::env::var_os(CONFIG_PATH_ENV).map(PathBuf::from).unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
    let config = match VerifierConfig::load(&config_path) {
        Ok(c) => c,
        Err(e) => finish(Outcome::local(
            Verdict::Deny,
            None,
            format!("verifier config is unusable, denying every pull until it is fixed: {e}"),
        )),
    };
    let deadline = started + Duration::from_millis(config.deadline_ms);
    output::configure_watchdog(config.deadline_ms, config.failure_policy);

    let args = match args::parse(&argv) {
        Ok(a) => a,
        Err(e) => finish(Outcome::local(Verdict::Deny, None, format!("malformed invocation: {e}"))),
    };
    // `REF@DIGEST`, or the reference alone when it already pins the digest.
    let label = if args.name.contains('@') { args.name.clone() } else { format!("{}@{}", args.name, args.digest) };
    output::set_label(&label);
    let deny = |why: String| -> ! {
        finish(Outcome::local(Verdict::Deny, Some(&label), format!("malformed invocation: {why}")))
    };

    let reference = Reference::parse(&args.name).unwrap_or_else(|e| deny(format!("-name {:?}: {e}", args.name)));
    let digest = Digest::parse(&args.digest).unwrap_or_else(|e| deny(format!("-digest: {e}")));
    if args.media_type != OCI_DESCRIPTOR_MEDIA_TYPE {
        deny(format!("-stdin-media-type {:?} is not {OCI_DESCRIPTOR_MEDIA_TYPE}", args.media_type));
    }
    if let Some(pinned) = reference.digest()
        && *pinned != digest
    {
        deny(format!("-name pins {pinned} but -digest is {digest}"));
    }
    let descriptor = read_descriptor(&digest).unwrap_or_else(|e| deny(e));

    for entry in &config.bootstrap_allowlist {
        if entry.matches(&reference, &digest) {
            finish(Outcome::local(
                Verdict::Allow,
                Some(&label),
                format!("bootstrap allowlist entry {entry} (agent not consulted)"),
            ));
        }
    }

    let remaining = deadline.saturating_duration_since(Instant::now());
    let agent_budget = remaining.saturating_sub(REPLY_MARGIN);
    if agent_budget.is_zero() {
        finish(Outcome::failure(config.failure_policy, &label, "no time left to ask the agent".into()));
    }
    let request = Request::Verify(VerifyRequest {
        version: PROTOCOL_VERSION,
        reference: args.name.clone(),
        digest: args.digest.clone(),
        descriptor,
        deadline_ms: agent_budget.as_millis() as u64,
    });
    match ask_agent(&config.socket, &request, remaining) {
        Answer::Decision(d) => finish(Outcome::agent(d.verdict, &label, d.reason, d.report_id)),
        Answer::Unavailable(why) => finish(Outcome::failure(config.failure_policy, &label, why)),
        Answer::Unusable(why) => finish(Outcome::local(
            Verdict::Deny,
            Some(&label),
            format!("{why}; denying (not a failure-policy case: the agent answered)"),
        )),
    }
}

/// What one exchange with the agent produced.
enum Answer {
    /// The agent decided.
    Decision(DecisionResponse),
    /// No decision could be had: no socket, connection refused, no answer in
    /// time, closed without answering, or an `error` answer ("no decision").
    /// The failure policy decides.
    Unavailable(String),
    /// The agent answered with something that is not a decision: too large,
    /// not understood, or a status. Always a deny: the agent was reachable,
    /// and what it sent may have been shaped by content an attacker pushed,
    /// so it must never reach a fail-open policy.
    Unusable(String),
}

/// Reads and checks the descriptor containerd writes on stdin.
fn read_descriptor(digest: &Digest) -> Result<Descriptor, String> {
    let mut buf = Vec::with_capacity(512);
    std::io::stdin()
        .lock()
        .take(MAX_STDIN_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading the descriptor from stdin: {e}"))?;
    if buf.len() > MAX_STDIN_BYTES {
        return Err(format!("stdin is larger than {MAX_STDIN_BYTES} bytes"));
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err("stdin is empty; expected the OCI descriptor JSON".into());
    }
    let d: Descriptor =
        serde_json::from_slice(&buf).map_err(|e| format!("stdin is not an OCI descriptor JSON object: {e}"))?;
    if d.digest != digest.to_string() {
        return Err(format!("descriptor digest {:?} differs from -digest {digest}", d.digest));
    }
    if d.media_type.is_empty() || d.media_type.len() > 255 {
        return Err("descriptor mediaType is empty or longer than 255 bytes".into());
    }
    Ok(d)
}

/// One request/response exchange with the agent, bounded by `budget`.
fn ask_agent(socket: &std::path::Path, request: &Request, budget: Duration) -> Answer {
    let unavailable = |what: &str, e: std::io::Error| {
        Answer::Unavailable(format!("agent unavailable ({what} {}: {e})", socket.display()))
    };
    if budget.is_zero() {
        return Answer::Unavailable("no time left to ask the agent".into());
    }
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => return unavailable("connect", e),
    };
    if let Err(e) = stream.set_write_timeout(Some(budget)).and_then(|()| stream.set_read_timeout(Some(budget))) {
        return unavailable("configure", e);
    }
    let mut line = match serde_json::to_vec(request) {
        Ok(l) => l,
        Err(e) => return Answer::Unusable(format!("encoding the request failed: {e}")),
    };
    line.push(b'\n');
    if line.len() > MAX_REQUEST_BYTES {
        return Answer::Unusable(format!("the request is larger than {MAX_REQUEST_BYTES} bytes"));
    }
    // The agent may answer (e.g. refuse the peer) and close before reading
    // the request: then the write fails but its answer is already readable.
    let write_error = stream.write_all(&line).err();
    let answer = match read_answer(&mut stream) {
        Ok(a) => a,
        Err(NoAnswer::Closed) => {
            return match write_error {
                Some(e) => unavailable("write to", e),
                None => Answer::Unavailable("agent closed the connection without answering".into()),
            };
        }
        Err(NoAnswer::Timeout) => {
            return Answer::Unavailable(format!("agent did not answer within {} ms", budget.as_millis()));
        }
        Err(NoAnswer::Io(e)) => return unavailable("read from", write_error.unwrap_or(e)),
        Err(NoAnswer::Unusable(why)) => return Answer::Unusable(why),
    };
    match serde_json::from_slice::<Response>(&answer) {
        Ok(Response::Decision(d)) => Answer::Decision(d),
        Ok(Response::Error { message }) => Answer::Unavailable(format!("agent refused the request: {message}")),
        Ok(Response::Status(_)) => Answer::Unusable("agent answered a verify request with a status".into()),
        Err(e) => Answer::Unusable(format!("agent answer is not understood ({e})")),
    }
}

/// Why [`read_answer`] has no answer line.
enum NoAnswer {
    /// End of stream before the first byte.
    Closed,
    /// Nothing complete within the socket's read timeout.
    Timeout,
    /// A read error before the first byte.
    Io(std::io::Error),
    /// Bytes arrived but cannot be an answer (too large, cut off).
    Unusable(String),
}

/// Reads the answer line, without its `\n`; an answer cut off by the end of
/// the stream is returned as it is (and then does not parse).
fn read_answer(stream: &mut UnixStream) -> Result<Vec<u8>, NoAnswer> {
    let too_large = || NoAnswer::Unusable(format!("agent answer is larger than {MAX_RESPONSE_BYTES} bytes"));
    let mut answer = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(NoAnswer::Timeout);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if answer.is_empty() => return Err(NoAnswer::Io(e)),
            Err(e) => {
                return Err(NoAnswer::Unusable(format!("agent answer was cut off after {} bytes ({e})", answer.len())));
            }
        };
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
        if let Some(end) = answer.iter().position(|b| *b == b'\n') {
            if end + 1 > MAX_RESPONSE_BYTES {
                return Err(too_large());
            }
            answer.truncate(end);
            return Ok(answer);
        }
        if answer.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
    }
    if answer.is_empty() { Err(NoAnswer::Closed) } else { Ok(answer) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A one-shot fake agent on a fresh socket that reads the request line and
    /// sends `answer` (or nothing, and closes).
    fn fake_agent(name: &str, answer: Vec<u8>) -> PathBuf {
        let path = std::env::temp_dir().join(format!("pullgate-verifier-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(&answer);
        });
        path
    }

    fn status_request() -> Request {
        Request::Status { version: PROTOCOL_VERSION }
    }

    fn ask(name: &str, answer: Vec<u8>) -> Answer {
        let path = fake_agent(name, answer);
        let a = ask_agent(&path, &status_request(), Duration::from_secs(5));
        let _ = std::fs::remove_file(&path);
        a
    }

    #[test]
    fn answers_that_are_not_decisions_deny_and_unavailability_goes_to_the_policy() {
        let decision = br#"{"type":"decision","verdict":"deny","reason":"r","reportId":"d-1"}
"#;
        assert!(matches!(ask("ok", decision.to_vec()), Answer::Decision(d) if d.report_id == "d-1"));

        let huge = format!(
            "{{\"type\":\"decision\",\"verdict\":\"deny\",\"reason\":\"{}\",\"reportId\":\"d\"}}\n",
            "x".repeat(100_000)
        );
        let Answer::Unusable(why) = ask("huge", huge.into_bytes()) else { panic!("an oversized answer must deny") };
        assert!(why.contains("larger than 65536 bytes"), "{why}");
        // Oversized without any newline at all, cut off by the close.
        assert!(matches!(ask("huge-open", vec![b'{'; MAX_RESPONSE_BYTES + 10]), Answer::Unusable(_)));
        let Answer::Unusable(why) = ask("garbage", b"{\"type\":\"decision\",\"verd\n".to_vec()) else { panic!() };
        assert!(why.contains("not understood"), "{why}");
        let status = br#"{"type":"status","agentVersion":"1","uptimeSecs":1,"generation":null,"mode":null,"configError":null,"counters":{}}
"#;
        assert!(matches!(ask("status", status.to_vec()), Answer::Unusable(w) if w.contains("with a status")));

        let error = b"{\"type\":\"error\",\"message\":\"no config\"}\n".to_vec();
        assert!(matches!(ask("error", error), Answer::Unavailable(w) if w.contains("no config")));
        assert!(matches!(ask("closed", Vec::new()), Answer::Unavailable(w) if w.contains("without answering")));
        let missing = std::env::temp_dir().join(format!("pullgate-verifier-{}-missing.sock", std::process::id()));
        assert!(matches!(
            ask_agent(&missing, &status_request(), Duration::from_secs(1)),
            Answer::Unavailable(w) if w.contains("agent unavailable (connect")
        ));
    }
}
