//! Connections to the operator's Redis: a single server, a Sentinel-managed
//! primary or a Redis Cluster, over plain TCP or TLS (rustls on aws-lc-rs;
//! a configured CA replaces the system roots). The password is set on the
//! connection settings only; it never appears in a URL, a key or a log.

use crate::{ClusterError, Mode, Settings};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, ConnectionInfo, FromRedisValue, IntoConnectionInfo, Pipeline, RedisResult};
use redis::{TlsCertificates, TlsMode};
use std::time::Duration;

/// An open connection (cheap to clone; requests are multiplexed).
#[derive(Clone)]
pub(crate) enum Conn {
    /// A single server or the primary Sentinel named.
    Plain(MultiplexedConnection),
    /// A Redis Cluster (commands routed by key slot).
    Cluster(ClusterConnection),
}

impl Conn {
    /// Runs one command.
    pub(crate) async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Conn::Plain(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }

    /// Runs a pipeline (all its keys in one slot).
    pub(crate) async fn pipe<T: FromRedisValue>(&mut self, p: &Pipeline) -> RedisResult<T> {
        match self {
            Conn::Plain(c) => p.query_async(c).await,
            Conn::Cluster(c) => p.query_async(c).await,
        }
    }
}

/// Opens connections of the configured topology.
pub(crate) enum Connector {
    Single(redis::Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster(redis::cluster::ClusterClient),
}

impl Connector {
    /// Checks the settings and prepares the client; connects to nothing.
    pub(crate) fn new(s: &Settings) -> Result<Connector, ClusterError> {
        let infos = s.urls.iter().map(|u| info(s, u)).collect::<Result<Vec<_>, _>>()?;
        let certs = s.ca_pem.as_ref().map(|pem| TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) });
        let invalid = |e: redis::RedisError| ClusterError::Client { detail: e.to_string() };
        match &s.mode {
            Mode::Single => {
                let info = infos.into_iter().next().ok_or(ClusterError::NoUrl)?;
                let client = match certs {
                    Some(c) => redis::Client::build_with_tls(info, c),
                    None => redis::Client::open(info),
                };
                Ok(Connector::Single(client.map_err(invalid)?))
            }
            Mode::Sentinel { master } => {
                let addrs = infos.iter().map(|i| i.addr().clone());
                let mut b = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master).map_err(invalid)?;
                if s.tls() {
                    b = b
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                }
                if let Some(c) = certs {
                    b = b.set_client_to_redis_certificates(c.clone()).set_client_to_sentinel_certificates(c);
                }
                if let Some(u) = &s.username {
                    b = b.set_client_to_redis_username(u);
                }
                if let Some(p) = &s.password {
                    b = b.set_client_to_redis_password(p.expose());
                }
                Ok(Connector::Sentinel(tokio::sync::Mutex::new(b.build().map_err(invalid)?)))
            }
            Mode::Cluster => {
                let mut b = redis::cluster::ClusterClientBuilder::new(infos)
                    .connection_timeout(s.timeout)
                    .response_timeout(s.timeout);
                if s.tls() {
                    b = b.tls(TlsMode::Secure);
                }
                if let Some(c) = certs {
                    b = b.certs(c);
                }
                Ok(Connector::Cluster(b.build().map_err(invalid)?))
            }
        }
    }

    /// Opens a connection, each step bounded by `timeout`.
    pub(crate) async fn connect(&self, timeout: Duration) -> RedisResult<Conn> {
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
        match self {
            Connector::Single(c) => Ok(Conn::Plain(c.get_multiplexed_async_connection_with_config(&config).await?)),
            Connector::Sentinel(c) => Ok(Conn::Plain(c.lock().await.get_async_connection_with_config(&config).await?)),
            Connector::Cluster(c) => Ok(Conn::Cluster(c.get_async_connection().await?)),
        }
    }
}

/// Connection settings for one URL, with the configured credentials.
fn info(s: &Settings, url: &str) -> Result<ConnectionInfo, ClusterError> {
    let info = url.into_connection_info().map_err(|e| ClusterError::Url { url: redact(url), detail: e.to_string() })?;
    let mut redis = info.redis_settings().clone();
    if redis.password().is_some() || redis.username().is_some() {
        return Err(ClusterError::CredentialsInUrl { url: redact(url) });
    }
    if let Some(u) = &s.username {
        redis = redis.set_username(u);
    }
    if let Some(p) = &s.password {
        redis = redis.set_password(p.expose());
    }
    Ok(info.set_redis_settings(redis))
}

/// `url` with anything between the scheme and an `@` replaced, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://<redacted>@{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_userinfo() {
        assert_eq!(redact("redis://:hunter2@redis:6379/0"), "redis://<redacted>@redis:6379/0");
        assert_eq!(redact("rediss://u:p@h"), "rediss://<redacted>@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }
}
