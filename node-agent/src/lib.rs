//! pullgate-agent: the per-node daemon that decides on containerd image pulls.
//!
//! Modules, one concern each:
//! * [`config`] — the typed, validated config model and config directories;
//! * [`cache`] — the decision cache (sled, with an in-memory twin);
//! * [`flight`] — single flight: one evaluation per key at a time;
//! * [`engine`] — the decision pipeline (allowlist → scope → verification →
//!   failure policy → mode) and its counters;
//! * [`report`] — decision reports, ids and the JSON-lines decision log;
//! * [`metrics`] — Prometheus metrics and the `/metrics` endpoint;
//! * [`oneshot`] — `verify REF`: one decision without a daemon;
//! * [`policy`] — Rego policies (regorus): the input document, tighten/override, `policy test`;
//! * [`server`] — the Unix socket: peers, framing, limits, drain;
//! * [`verify`] — runs required verifiers against the registry;
//! * [`platform`] — node platform, multi-platform indexes and which manifests a scope verifies;
//! * [`breakglass`] — timed break-glass: validation, label, metrics, the per-minute warning;
//! * [`sync`] — config sources: Kubernetes ConfigMaps and pull Secrets,
//!   generations on disk, reload when a config directory changes;
//! * [`cli`] — the commands behind the thin `main`.

pub mod attached;
pub mod breakglass;
pub mod cache;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod coverage;
pub mod engine;
pub mod flight;
pub mod inventory;
pub mod metrics;
pub mod oneshot;
pub mod platform;
pub mod policy;
pub mod report;
pub mod server;
pub mod sync;
pub mod verify;
