//! `scripts/image`: the agent's OCI image is reproducible, is a valid OCI image
//! layout holding exactly the three static binaries, and a real containerd pulls
//! it from a registry.
//!
//! One test function, because it builds the release musl binaries (minutes on a
//! cold `target/`); the later runs of the script reuse cargo's artifacts.

use pullgate_testkit::containerd::{self, Containerd};
use pullgate_testkit::{Registry, RegistryOptions, sha256};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const MUSL: &str = "x86_64-unknown-linux-musl";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const BINARIES: [&str; 3] = ["pullgate-agent", "pullgate-install", "pullgate-verifier"];
/// A `SOURCE_DATE_EPOCH` for the run that must differ only in its times.
const OTHER_EPOCH: u64 = 1_700_000_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn git(args: &[&str]) -> String {
    let out = Command::new("git").args(args).current_dir(repo()).output().expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs `scripts/image --out OUT` with a plain environment (none of the
/// variables `cargo test` sets, so the nested cargo sees what a shell would);
/// returns the digest it printed last.
fn build_image(out: &Path, epoch: Option<u64>) -> String {
    let mut cmd = Command::new(repo().join("scripts/image"));
    cmd.arg("--out").arg(out).current_dir(repo()).env_clear();
    for (k, v) in std::env::vars_os() {
        let keep = [
            "PATH",
            "HOME",
            "USER",
            "LANG",
            "TMPDIR",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_NET_OFFLINE",
            "RUSTUP_HOME",
            "RUSTUP_TOOLCHAIN",
            "CC_x86_64_unknown_linux_musl",
        ];
        if keep.iter().any(|x| k == *x) {
            cmd.env(k, v);
        }
    }
    if let Some(e) = epoch {
        cmd.env("SOURCE_DATE_EPOCH", e.to_string());
    }
    let started = Instant::now();
    let output = cmd.output().expect("run scripts/image");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "scripts/image failed ({}):\n{stderr}", output.status);
    eprintln!("scripts/image --out {} took {:.1?}:\n{stderr}", out.display(), started.elapsed());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let digest = stdout.lines().last().unwrap_or_default().to_string();
    assert!(
        digest.len() == 71 && digest.starts_with("sha256:") && digest[7..].bytes().all(|b| b.is_ascii_hexdigit()),
        "the last stdout line is the manifest digest, not {digest:?}"
    );
    digest
}

/// Every regular file under `dir`, by relative path.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                files.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    files
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (days-from-civil inverse, Howard Hinnant's algorithm).
fn rfc3339(t: u64) -> String {
    let (days, secs) = ((t / 86_400) as i64, t % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// One entry of the layer tar.
#[derive(Debug)]
struct Entry {
    name: String,
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    uname: String,
    gname: String,
    mtime: u64,
    data: Vec<u8>,
}

fn octal(field: &[u8]) -> u64 {
    let s = String::from_utf8_lossy(field);
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    u64::from_str_radix(s, 8).unwrap_or_else(|e| panic!("tar numeric field {s:?}: {e}"))
}

fn cstr(field: &[u8]) -> String {
    String::from_utf8_lossy(field.split(|b| *b == 0).next().unwrap()).into_owned()
}

/// A ustar/pax reader: the entries, with pax `path` records applied; any
/// other pax record (atime, ctime, …) fails the test, as the script deletes them.
fn untar(tar: &[u8]) -> Vec<Entry> {
    assert_eq!(tar.len() % 512, 0, "a tar is whole 512-byte blocks");
    let mut entries = Vec::new();
    let mut pax_path = None;
    let mut at = 0;
    loop {
        let h = &tar[at..at + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let sum: u64 =
            h.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { u64::from(*b) }).sum();
        assert_eq!(octal(&h[148..156]), sum, "header checksum at {at}");
        assert_eq!(&h[257..263], b"ustar\0", "POSIX ustar magic");
        let size = octal(&h[124..136]) as usize;
        let data = tar[at + 512..at + 512 + size].to_vec();
        at += 512 + size.div_ceil(512) * 512;
        match h[156] {
            b'x' => {
                let text = String::from_utf8(data).unwrap();
                for record in text.lines() {
                    let (_, kv) = record.split_once(' ').unwrap();
                    let (k, v) = kv.split_once('=').unwrap();
                    assert_eq!(k, "path", "unexpected pax record {record:?}");
                    pax_path = Some(v.to_string());
                }
            }
            b'g' => panic!("a global pax header"),
            kind => {
                let prefix = cstr(&h[345..500]);
                let name = cstr(&h[0..100]);
                let name = pax_path.take().unwrap_or(if prefix.is_empty() { name } else { format!("{prefix}/{name}") });
                entries.push(Entry {
                    name,
                    kind,
                    mode: octal(&h[100..108]) as u32,
                    uid: octal(&h[108..116]),
                    gid: octal(&h[116..124]),
                    mtime: octal(&h[136..148]),
                    uname: cstr(&h[265..297]),
                    gname: cstr(&h[297..329]),
                    data,
                });
            }
        }
    }
    entries
}

/// True for an x86-64 ELF executable with no program interpreter (statically linked).
fn is_static_x86_64_elf(bin: &[u8]) -> bool {
    if bin.len() < 64 || &bin[..4] != b"\x7fELF" || bin[4] != 2 || bin[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bin[o], bin[o + 1]]);
    let machine = u16_at(0x12);
    let phoff = u64::from_le_bytes(bin[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36) as usize, u16_at(0x38) as usize);
    const PT_INTERP: u32 = 3;
    machine == 62
        && (0..phnum).all(|i| {
            let o = phoff + i * phentsize;
            u32::from_le_bytes(bin[o..o + 4].try_into().unwrap()) != PT_INTERP
        })
}

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("layer.gz");
    std::fs::write(&file, gz).unwrap();
    let out = Command::new("gzip").arg("-dc").arg(&file).output().expect("gzip");
    assert!(out.status.success(), "gzip -dc: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// What `validate` found, for the later checks.
struct Image {
    manifest: Value,
    config: Value,
    entries: Vec<Entry>,
}

/// Checks the layout against the OCI image spec and the script's promises.
fn validate(layout: &Path, digest: &str, epoch: u64, revision: &str) -> Image {
    let files = tree(layout);
    assert_eq!(json(&files["oci-layout"]), serde_json::json!({"imageLayoutVersion": "1.0.0"}));

    // Every blob is named by its digest; there are exactly the manifest, the config and the layer.
    let blobs: BTreeMap<String, &Vec<u8>> =
        files.iter().filter_map(|(p, b)| p.strip_prefix("blobs/sha256/").map(|h| (format!("sha256:{h}"), b))).collect();
    for (name, bytes) in &blobs {
        assert_eq!(&sha256(bytes), name, "blob {name} does not hash to its name");
    }
    assert_eq!(blobs.len(), 3, "manifest, config and one layer: {:?}", blobs.keys().collect::<Vec<_>>());
    assert_eq!(files.len(), 5, "index.json, oci-layout and the blobs: {:?}", files.keys().collect::<Vec<_>>());
    let blob = |descriptor: &Value| -> Vec<u8> {
        let d = descriptor["digest"].as_str().expect("descriptor digest");
        let b = blobs.get(d).unwrap_or_else(|| panic!("{d} is not in blobs/"));
        assert_eq!(descriptor["size"].as_u64(), Some(b.len() as u64), "size of {d}");
        b.to_vec()
    };

    let index = json(&files["index.json"]);
    assert_eq!(index["schemaVersion"], 2);
    let entries = index["manifests"].as_array().expect("manifests");
    assert_eq!(entries.len(), 1, "one image in index.json");
    let m = &entries[0];
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["digest"], digest, "the printed digest is the manifest's");
    assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], format!("v{VERSION}"));
    let manifest = json(&blob(m));
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    let config = json(&blob(&manifest["config"]));
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer");
    assert_eq!(layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    let gz = blob(&layers[0]);
    // gzip -n: no file name (FLG.FNAME) and a zero MTIME in the member header.
    assert_eq!(&gz[..3], &[0x1f, 0x8b, 8], "a gzip member");
    assert_eq!(gz[3] & 0x08, 0, "the gzip header carries no file name");
    assert_eq!(&gz[4..8], &[0, 0, 0, 0], "the gzip header carries no time");
    let tar = gunzip(&gz);
    assert_eq!(config["rootfs"], serde_json::json!({"type": "layers", "diff_ids": [sha256(&tar)]}));

    // The config.
    let created = rfc3339(epoch);
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["created"], created);
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/usr/local/bin/pullgate-agent"]));
    assert_eq!(config["config"]["User"], "0");
    let labels = &config["config"]["Labels"];
    let want = [
        ("org.opencontainers.image.title", "pullgate-agent".to_string()),
        ("org.opencontainers.image.version", VERSION.to_string()),
        ("org.opencontainers.image.revision", revision.to_string()),
        ("org.opencontainers.image.source", workspace_repository()),
        ("org.opencontainers.image.licenses", "Apache-2.0".to_string()),
        ("org.opencontainers.image.created", created.clone()),
    ];
    for (k, v) in &want {
        assert_eq!(labels[k].as_str(), Some(v.as_str()), "config label {k}");
    }
    assert_eq!(&manifest["annotations"], labels, "the manifest annotations are the config labels");

    // The layer: the directories and exactly the three binaries, in name order, owned by 0.
    let entries = untar(&tar);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let mut want_names = vec!["usr/".to_string(), "usr/local/".to_string(), "usr/local/bin/".to_string()];
    want_names.extend(BINARIES.iter().map(|b| format!("usr/local/bin/{b}")));
    assert_eq!(names, want_names, "layer entries");
    for e in &entries {
        let want_kind = if e.name.ends_with('/') { b'5' } else { b'0' };
        assert_eq!(e.kind, want_kind, "{}: entry type", e.name);
        assert_eq!(e.mode, 0o755, "{}: mode", e.name);
        assert_eq!((e.uid, e.gid), (0, 0), "{}: owner", e.name);
        assert_eq!((e.uname.as_str(), e.gname.as_str()), ("", ""), "{}: numeric owner only", e.name);
        assert_eq!(e.mtime, epoch, "{}: mtime", e.name);
        if e.kind == b'0' {
            assert!(is_static_x86_64_elf(&e.data), "{} is a static x86-64 executable", e.name);
        }
    }
    Image { manifest, config, entries }
}

/// `repository` of `[workspace.package]` in the workspace Cargo.toml.
fn workspace_repository() -> String {
    let toml = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let section = toml.split("[workspace.package]").nth(1).expect("[workspace.package]");
    let line = section.lines().find(|l| l.starts_with("repository")).expect("a repository key");
    line.split('"').nth(1).expect("a quoted repository URL").to_string()
}

/// `SOURCE_DATE_EPOCH` if the test was given one, else the commit time of `revision`.
fn epoch_of(revision: &str) -> u64 {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.parse().expect("SOURCE_DATE_EPOCH"),
        Err(_) => git(&["log", "-1", "--format=%ct", revision]).parse().unwrap(),
    }
}

/// The file contents of the layer of the image in `layout`.
fn layer_files(layout: &Path) -> Vec<(String, Vec<u8>)> {
    let read = |d: &str| std::fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let index = json(&std::fs::read(layout.join("index.json")).unwrap());
    let manifest = json(&read(index["manifests"][0]["digest"].as_str().unwrap()));
    let tar = gunzip(&read(manifest["layers"][0]["digest"].as_str().unwrap()));
    untar(&tar).into_iter().map(|e| (e.name, e.data)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_image_is_reproducible_valid_and_pulled_by_containerd() {
    let work = tempfile::tempdir().unwrap();
    let (a, b, c) = (work.path().join("a"), work.path().join("b"), work.path().join("c"));
    let inherited = std::env::var("SOURCE_DATE_EPOCH").ok().map(|v| v.parse::<u64>().expect("SOURCE_DATE_EPOCH"));

    // Twice from the same commit: the same bytes (the second run reuses cargo's
    // artifacts). Others may commit or edit sources while the first run builds
    // (a shared work tree); then the inputs differ, and the pair is built again.
    let mut attempt = 0;
    let (digest, revision) = loop {
        attempt += 1;
        let head = git(&["rev-parse", "HEAD"]);
        let digest = build_image(&a, inherited);
        let again = build_image(&b, inherited);
        let head_after = git(&["rev-parse", "HEAD"]);
        let changed = if head != head_after {
            Some(format!("HEAD moved from {head} to {head_after}"))
        } else if layer_files(&a) != layer_files(&b) {
            Some("cargo rebuilt the binaries between the two runs (sources changed)".to_string())
        } else {
            None
        };
        match changed {
            Some(why) if attempt < 3 => eprintln!("the inputs changed during the builds ({why}): building both again"),
            Some(why) => panic!("the inputs kept changing during the builds; last: {why}"),
            None => {
                assert_eq!(digest, again, "two builds of one commit give one digest");
                assert!(tree(&a) == tree(&b), "the two layouts are byte for byte the same");
                break (digest, head);
            }
        }
    };
    let epoch = epoch_of(&revision);
    let image = validate(&a, &digest, epoch, &revision);

    // The binaries are the ones cargo built for musl (the verifier with its own profile).
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        None => repo().join("target"),
    };
    for e in image.entries.iter().filter(|e| e.kind == b'0') {
        let name = e.name.rsplit('/').next().unwrap();
        let profile = if name == "pullgate-verifier" { "verifier" } else { "release" };
        let built = std::fs::read(target.join(MUSL).join(profile).join(name)).expect("built binary");
        assert!(built == e.data, "{} in the layer is target/{MUSL}/{profile}/{name}", e.name);
    }

    // They run, from the layer's bytes: `--version` names this version; the verifier,
    // exec'd without containerd's arguments, denies as it must (one line, exit 1).
    let bin_dir = tempfile::tempdir().unwrap();
    for e in image.entries.iter().filter(|e| e.kind == b'0') {
        use std::os::unix::fs::PermissionsExt;
        let name = e.name.rsplit('/').next().unwrap();
        let path = bin_dir.path().join(name);
        std::fs::write(&path, &e.data).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = if name == "pullgate-verifier" {
            Command::new(&path).env("PULLGATE_VERIFIER_CONFIG", bin_dir.path().join("none.json")).output()
        } else {
            Command::new(&path).arg("--version").output()
        }
        .unwrap_or_else(|err| panic!("running {name} from the layer: {err}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if name == "pullgate-verifier" {
            assert_eq!(out.status.code(), Some(1), "{name}: {stdout}");
            assert!(stdout.starts_with("pullgate: denied") && stdout.lines().count() == 1, "{name}: {stdout}");
        } else {
            assert!(out.status.success(), "{name} --version: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(stdout.trim(), format!("{name} {VERSION}"));
        }
    }

    // Another SOURCE_DATE_EPOCH: another created time, other mtimes, another digest.
    let head = git(&["rev-parse", "HEAD"]);
    let other = build_image(&c, Some(OTHER_EPOCH));
    assert_ne!(other, digest, "the epoch is part of the image");
    let other_image = validate(&c, &other, OTHER_EPOCH, &head);
    assert_eq!(other_image.config["created"], "2023-11-14T22:13:20Z");

    // A real containerd pulls it from a registry, by tag and by digest.
    if let Err(reason) = containerd::available() {
        eprintln!("skipped: the containerd pull: {reason}");
        return;
    }
    let registry = Registry::start(RegistryOptions::default()).await;
    registry.push_layout("pullgate/agent", &a).await;
    let ctd = Containerd::start();
    ctd.trust_plain_http(&registry.host);
    let by_tag = format!("{}/pullgate/agent:v{VERSION}", registry.host);
    let by_digest = format!("{}/pullgate/agent@{digest}", registry.host);
    for reference in [&by_tag, &by_digest] {
        let out = ctd.ctr_pull(reference);
        assert!(
            out.status.success(),
            "ctr image pull {reference}: {}{}\ncontainerd log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            ctd.log()
        );
    }
    let ls = ctd.ctr(&["images", "ls"]);
    assert!(ls.status.success(), "ctr images ls: {}", String::from_utf8_lossy(&ls.stderr));
    let ls = String::from_utf8_lossy(&ls.stdout);
    for reference in [&by_tag, &by_digest] {
        let line = ls.lines().find(|l| l.split_whitespace().next() == Some(reference.as_str()));
        let line = line.unwrap_or_else(|| panic!("{reference} not in ctr images ls:\n{ls}"));
        assert!(line.split_whitespace().any(|w| w == digest), "{reference} has digest {digest}: {line}");
        assert!(line.contains("linux/amd64"), "{reference} is linux/amd64: {line}");
    }
    // containerd holds the layer it was given: the same bytes as the layout's.
    let layer = image.manifest["layers"][0]["digest"].as_str().unwrap();
    let got = ctd.ctr(&["content", "get", layer]);
    assert!(got.status.success(), "ctr content get {layer}: {}", String::from_utf8_lossy(&got.stderr));
    assert_eq!(sha256(&got.stdout), layer);
}
