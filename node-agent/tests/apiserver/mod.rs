//! A Kubernetes API server double for tests: a small HTTP/1.1 server on
//! 127.0.0.1 that speaks the real list/watch protocol for namespaced
//! ConfigMaps and Secrets and accepts core/v1 Events.
//!
//! * `GET /api/v1/namespaces/NS/{configmaps,secrets}?labelSelector=…` lists
//!   with `metadata.resourceVersion`;
//! * `…&watch=true&resourceVersion=RV&allowWatchBookmarks=true` streams
//!   newline-delimited ADDED / MODIFIED / DELETED / BOOKMARK events over
//!   chunked encoding, starting after RV; an RV older than the compaction
//!   floor gets an ERROR event with a 410 Status (as a real API server does);
//! * a watch can be ended with a 410 ERROR ([`ApiServer::expire_watches`]) or
//!   cut without a terminating chunk ([`ApiServer::drop_watches`]);
//! * `POST /api/v1/namespaces/NS/events` records the Event.
//!
//! Label selectors support `k=v`, `k==v`, `k!=v`, `k` and `!k`, joined by
//! commas; objects leaving or entering a watch's selector become DELETED or
//! ADDED, as on a real server. Every response closes its connection.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The namespace the double serves.
pub const NS: &str = "pullgate-system";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }
    fn from_plural(s: &str) -> Option<Kind> {
        match s {
            "configmaps" => Some(Kind::ConfigMap),
            "secrets" => Some(Kind::Secret),
            _ => None,
        }
    }
}

struct Change {
    rv: u64,
    kind: Kind,
    old: Option<Value>,
    new: Option<Value>,
}

#[derive(Default)]
struct State {
    rv: u64,
    floor: u64,
    objects: BTreeMap<(Kind, String), Value>,
    history: Vec<Change>,
    events: Vec<Value>,
    lists: BTreeMap<Kind, usize>,
    watches: BTreeMap<Kind, usize>,
    gone: usize,
    uid: u64,
}

#[derive(Clone, Copy, Debug)]
enum Signal {
    Changed,
    Expire,
    Drop,
}

/// The running double. Dropping it stops the listener and cuts every watch.
pub struct ApiServer {
    pub url: String,
    state: Arc<Mutex<State>>,
    signal: broadcast::Sender<Signal>,
    task: JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.signal.send(Signal::Drop);
    }
}

impl ApiServer {
    /// Starts the double on an ephemeral port of 127.0.0.1.
    pub async fn start() -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State { rv: 100, ..State::default() }));
        let (signal, _) = broadcast::channel(256);
        let (st, sig) = (state.clone(), signal.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else { return };
                let (st, sig) = (st.clone(), sig.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, st, sig).await;
                });
            }
        });
        ApiServer { url, state, signal, task }
    }

    /// A real kube client pointed at the double.
    pub fn client(&self) -> kube::Client {
        let mut cfg = kube::Config::new(self.url.parse().unwrap());
        cfg.default_namespace = NS.to_string();
        cfg.connect_timeout = Some(Duration::from_secs(2));
        kube::Client::try_from(cfg).unwrap()
    }

    /// A kubeconfig file's text pointing at the double.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: nobody\n    namespace: {NS}\ncurrent-context: double\nusers:\n- name: nobody\n  user: {{}}\n",
            self.url
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Creates or replaces an object (a ConfigMap or Secret JSON without
    /// server fields); returns its new resourceVersion.
    pub fn apply(&self, kind: Kind, mut obj: Value) -> u64 {
        let rv = {
            let mut st = self.lock();
            st.rv += 1;
            let rv = st.rv;
            let name = obj["metadata"]["name"].as_str().unwrap().to_string();
            let old = st.objects.get(&(kind, name.clone())).cloned();
            let uid = match &old {
                Some(o) => o["metadata"]["uid"].clone(),
                None => {
                    st.uid += 1;
                    json!(format!("uid-{}", st.uid))
                }
            };
            obj["apiVersion"] = json!("v1");
            obj["kind"] = json!(kind.name());
            obj["metadata"]["namespace"] = json!(NS);
            obj["metadata"]["uid"] = uid;
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            st.objects.insert((kind, name), obj.clone());
            st.history.push(Change { rv, kind, old, new: Some(obj) });
            rv
        };
        let _ = self.signal.send(Signal::Changed);
        rv
    }

    /// Deletes an object; returns whether it existed.
    pub fn delete(&self, kind: Kind, name: &str) -> bool {
        {
            let mut st = self.lock();
            let Some(mut old) = st.objects.remove(&(kind, name.to_string())) else { return false };
            st.rv += 1;
            let rv = st.rv;
            let before = old.clone();
            old["metadata"]["resourceVersion"] = json!(rv.to_string());
            st.history.push(Change { rv, kind, old: Some(before), new: None });
            // The DELETED event carries the object at its deletion version.
            st.history.last_mut().unwrap().old = Some(old);
        }
        let _ = self.signal.send(Signal::Changed);
        true
    }

    /// Forgets history: watches resuming from an older version get 410.
    pub fn compact(&self) {
        let mut st = self.lock();
        st.floor = st.rv;
        st.history.clear();
    }

    /// Ends every open watch with an ERROR event carrying a 410 Status.
    pub fn expire_watches(&self) {
        let _ = self.signal.send(Signal::Expire);
    }

    /// Cuts every open watch connection without a terminating chunk.
    pub fn drop_watches(&self) {
        let _ = self.signal.send(Signal::Drop);
    }

    /// Changes an object while every watch is cut and history compacted, as
    /// when a watch breaks and the server's event window moves on: a watcher
    /// resuming from its last version gets 410 and must relist to see it.
    pub fn drop_watches_and_apply(&self, kind: Kind, obj: Value) {
        let mut st = self.lock();
        // Cut first (under the lock, so no open watch can send anything newer).
        let _ = self.signal.send(Signal::Drop);
        st.rv += 1;
        let rv = st.rv;
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let mut obj = obj;
        let old = st.objects.get(&(kind, name.clone())).cloned();
        obj["apiVersion"] = json!("v1");
        obj["kind"] = json!(kind.name());
        obj["metadata"]["namespace"] = json!(NS);
        obj["metadata"]["uid"] = old.map(|o| o["metadata"]["uid"].clone()).unwrap_or(json!("uid-new"));
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.objects.insert((kind, name), obj);
        st.history.clear();
        st.floor = rv;
    }

    /// How many 410 ERROR events were sent.
    pub fn gone_sent(&self) -> usize {
        self.lock().gone
    }

    /// Events posted so far.
    pub fn events(&self) -> Vec<Value> {
        self.lock().events.clone()
    }

    /// How many list requests were served for `kind`.
    pub fn lists(&self, kind: Kind) -> usize {
        self.lock().lists.get(&kind).copied().unwrap_or(0)
    }

    /// How many watch requests were served for `kind`.
    pub fn watches(&self, kind: Kind) -> usize {
        self.lock().watches.get(&kind).copied().unwrap_or(0)
    }
}

/// A ConfigMap JSON.
pub fn configmap(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)], data: &[(&str, &str)]) -> Value {
    let map = |kv: &[(&str, &str)]| Value::Object(kv.iter().map(|(k, v)| (k.to_string(), json!(v))).collect());
    json!({"metadata": {"name": name, "labels": map(labels), "annotations": map(annotations)}, "data": map(data)})
}

/// A Secret JSON with `data` given in plain bytes (encoded to base64 here).
pub fn secret(name: &str, labels: &[(&str, &str)], type_: &str, data: &[(&str, &[u8])]) -> Value {
    use base64::Engine as _;
    let labels = Value::Object(labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect());
    let data = Value::Object(
        data.iter().map(|(k, v)| (k.to_string(), json!(base64::engine::general_purpose::STANDARD.encode(v)))).collect(),
    );
    json!({"metadata": {"name": name, "labels": labels}, "type": type_, "data": data})
}

fn matches(selector: &str, obj: &Value) -> bool {
    let labels = &obj["metadata"]["labels"];
    selector.split(',').map(str::trim).filter(|s| !s.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels[k.trim()].as_str() == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            labels.get(k).is_none()
        } else {
            labels.get(term).is_some()
        }
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(target: &str) -> (String, BTreeMap<String, String>) {
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let params = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (path.to_string(), params)
}

async fn respond(conn: &mut TcpStream, status: &str, body: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(body).unwrap();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(&body).await?;
    conn.shutdown().await
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

async fn serve(conn: TcpStream, state: Arc<Mutex<State>>, signal: broadcast::Sender<Signal>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn);
    let mut head = Vec::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            content_length = v.trim().parse().unwrap_or(0);
        }
        head.push(line);
        if head.len() > 100 {
            return Ok(());
        }
    }
    let mut body = vec![0u8; content_length.min(1 << 20)];
    reader.read_exact(&mut body).await?;
    let mut conn = reader.into_inner();
    let first = head.first().cloned().unwrap_or_default();
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, params) = query(target);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        ("GET", ["api", "v1", "namespaces", ns, plural]) if *ns == NS => {
            let Some(kind) = Kind::from_plural(plural) else {
                return respond(&mut conn, "404 Not Found", &status_json(404, "NotFound", "no such resource")).await;
            };
            let selector = params.get("labelSelector").cloned().unwrap_or_default();
            if params.get("watch").map(|w| w == "true" || w == "1").unwrap_or(false) {
                let rv: u64 = params.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
                let bookmarks = params.get("allowWatchBookmarks").map(|b| b == "true").unwrap_or(false);
                watch(conn, state, signal, kind, selector, rv, bookmarks).await
            } else {
                let list = {
                    let mut st = state.lock().unwrap();
                    *st.lists.entry(kind).or_default() += 1;
                    let items: Vec<Value> = st
                        .objects
                        .iter()
                        .filter(|((k, _), o)| *k == kind && matches(&selector, o))
                        .map(|(_, o)| o.clone())
                        .collect();
                    json!({"apiVersion": "v1", "kind": format!("{}List", kind.name()),
                           "metadata": {"resourceVersion": st.rv.to_string()}, "items": items})
                };
                respond(&mut conn, "200 OK", &list).await
            }
        }
        ("POST", ["api", "v1", "namespaces", ns, "events"]) if *ns == NS => {
            let Ok(mut ev) = serde_json::from_slice::<Value>(&body) else {
                return respond(&mut conn, "400 Bad Request", &status_json(400, "BadRequest", "not JSON")).await;
            };
            {
                let mut st = state.lock().unwrap();
                st.rv += 1;
                ev["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                st.events.push(ev.clone());
            }
            respond(&mut conn, "201 Created", &ev).await
        }
        _ => respond(&mut conn, "404 Not Found", &status_json(404, "NotFound", "not served by the double")).await,
    }
}

async fn chunk(conn: &mut TcpStream, v: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).unwrap();
    line.push(b'\n');
    conn.write_all(format!("{:x}\r\n", line.len()).as_bytes()).await?;
    conn.write_all(&line).await?;
    conn.write_all(b"\r\n").await?;
    conn.flush().await
}

/// The watch events for changes after `after`, as this watch's selector sees them.
fn pending(st: &State, kind: Kind, selector: &str, after: u64) -> Vec<Value> {
    let mut out = Vec::new();
    for c in st.history.iter().filter(|c| c.kind == kind && c.rv > after) {
        let m_old = c.old.as_ref().map(|o| matches(selector, o)).unwrap_or(false);
        let m_new = c.new.as_ref().map(|o| matches(selector, o)).unwrap_or(false);
        let ev = match (&c.old, &c.new) {
            (_, Some(n)) if m_new && m_old => json!({"type": "MODIFIED", "object": n}),
            (_, Some(n)) if m_new => json!({"type": "ADDED", "object": n}),
            (_, Some(n)) if m_old => json!({"type": "DELETED", "object": n}),
            (Some(o), None) if m_old => json!({"type": "DELETED", "object": o}),
            _ => continue,
        };
        out.push(ev);
    }
    out
}

async fn watch(
    mut conn: TcpStream,
    state: Arc<Mutex<State>>,
    signal: broadcast::Sender<Signal>,
    kind: Kind,
    selector: String,
    from: u64,
    bookmarks: bool,
) -> std::io::Result<()> {
    let mut rx = signal.subscribe();
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .await?;
    let gone = || json!({"type": "ERROR", "object": status_json(410, "Expired", "too old resource version")});
    let too_old = {
        let mut st = state.lock().unwrap();
        *st.watches.entry(kind).or_default() += 1;
        let too_old = from < st.floor;
        st.gone += usize::from(too_old);
        too_old
    };
    if too_old {
        chunk(&mut conn, &gone()).await?;
        conn.write_all(b"0\r\n\r\n").await?;
        return conn.shutdown().await;
    }
    let mut sent = from;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let (events, rv) = {
            let st = state.lock().unwrap();
            (pending(&st, kind, &selector, sent), st.rv)
        };
        for ev in events {
            chunk(&mut conn, &ev).await?;
        }
        sent = rv;
        tokio::select! {
            // Signals first: a cut must win over a bookmark that would claim newer versions.
            biased;
            s = rx.recv() => match s {
                Ok(Signal::Changed) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Ok(Signal::Expire) => {
                    state.lock().unwrap().gone += 1;
                    chunk(&mut conn, &gone()).await?;
                    conn.write_all(b"0\r\n\r\n").await?;
                    return conn.shutdown().await;
                }
                Ok(Signal::Drop) | Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = tick.tick() => if bookmarks {
                let bm = json!({"type": "BOOKMARK", "object": {"apiVersion": "v1", "kind": kind.name(),
                                "metadata": {"resourceVersion": sent.to_string()}}});
                chunk(&mut conn, &bm).await?;
            },
        }
    }
}
