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
    CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, Descriptor, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, OCI_DESCRIPTOR_MEDIA_TYPE,
    PROTOCOL_VERSION, Request, Response, Verdict, VerifierConfig, VerifyRequest,
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
        println!("pullgate-verifier {}", env!("CARGO_PKG_VERSION"));
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
        Ok(Response::Decision(d)) => finish(Outcome::agent(d.verdict, &label, d.reason, d.report_id)),
        Ok(Response::Error { message }) => {
            finish(Outcome::failure(config.failure_policy, &label, format!("agent refused the request: {message}")))
        }
        Ok(Response::Status(_)) => finish(Outcome::failure(
            config.failure_policy,
            &label,
            "agent answered with a status, not a decision".into(),
        )),
        Err(e) => finish(Outcome::failure(config.failure_policy, &label, e)),
    }
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
fn ask_agent(socket: &std::path::Path, request: &Request, budget: Duration) -> Result<Response, String> {
    let unavailable = |what: &str, e: std::io::Error| format!("agent unavailable ({what} {}: {e})", socket.display());
    if budget.is_zero() {
        return Err("no time left to ask the agent".into());
    }
    let mut stream = UnixStream::connect(socket).map_err(|e| unavailable("connect", e))?;
    stream.set_write_timeout(Some(budget)).map_err(|e| unavailable("configure", e))?;
    stream.set_read_timeout(Some(budget)).map_err(|e| unavailable("configure", e))?;
    let mut line = serde_json::to_vec(request).map_err(|e| format!("encoding the request: {e}"))?;
    line.push(b'\n');
    if line.len() > MAX_REQUEST_BYTES {
        return Err(format!("request is larger than {MAX_REQUEST_BYTES} bytes"));
    }
    // The agent may answer (e.g. refuse the peer) and close before reading
    // the request: then the write fails but its answer is already readable.
    let write_error = stream.write_all(&line).err();
    let mut answer = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(format!("agent did not answer within {} ms", budget.as_millis()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if write_error.is_some() && answer.is_empty() => {
                return Err(unavailable("write to", write_error.unwrap_or(e)));
            }
            Err(e) => return Err(unavailable("read from", e)),
        };
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
        if answer.len() > MAX_RESPONSE_BYTES {
            return Err(format!("agent answer is larger than {MAX_RESPONSE_BYTES} bytes"));
        }
        if answer.ends_with(b"\n") {
            break;
        }
    }
    if answer.is_empty() {
        return Err(match write_error {
            Some(e) => unavailable("write to", e),
            None => "agent closed the connection without answering".into(),
        });
    }
    serde_json::from_slice(&answer).map_err(|e| format!("agent answer is not understood: {e}"))
}
