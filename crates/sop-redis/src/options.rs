//! Where and how to reach Redis.

use std::fmt;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use sop::{Error, Result};

/// How to reach the Redis server of a [`RedisCoordinator`](crate::RedisCoordinator).
///
/// `url` (`redis://[:password@]host[:port][/db]`), when set, gives the address, password and
/// database; otherwise `address` (`host:port`, `host`, or `[v6]:port`) does. `password`, when
/// set, and `db`, when not 0, override what the URL says.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// A `redis://` URL; takes precedence over `address`.
    pub url: Option<String>,
    /// `host:port` of the server when `url` is not set.
    pub address: String,
    /// The password (`AUTH`), if the server requires one.
    pub password: Option<String>,
    /// The Redis logical database (`SELECT`).
    pub db: i64,
    /// Bound on establishing one connection (TCP connect, handshake, and the first `PING`).
    pub connect_timeout: Duration,
    /// Bound on each read and write of a command on an established connection.
    pub io_timeout: Duration,
    /// How many idle connections are kept for reuse (more are opened under contention and
    /// closed when returned to a full pool).
    pub pool_size: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            url: None,
            address: "127.0.0.1:6379".to_owned(),
            password: None,
            db: 0,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(2),
            pool_size: 4,
        }
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("address", &self.address)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl RedisOptions {
    /// Options with the given `redis://` URL and every other setting at its default.
    #[must_use]
    pub fn from_url(url: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            ..Self::default()
        }
    }

    /// Where the options point, for messages (no password).
    pub(crate) fn target(&self) -> String {
        match &self.url {
            Some(url) => redact_url(url),
            None => format!("{} (db {})", self.address, self.db),
        }
    }

    /// The redis crate's connection settings.
    pub(crate) fn connection_info(&self) -> Result<ConnectionInfo> {
        let info = match &self.url {
            Some(url) => url.as_str().into_connection_info().map_err(|e| {
                Error::InvalidOption(format!("Redis URL {:?}: {e}", redact_url(url)))
            })?,
            None => {
                let (host, port) = parse_address(&self.address)?;
                ConnectionAddr::Tcp(host, port)
                    .into_connection_info()
                    .map_err(|e| Error::InvalidOption(format!("Redis address: {e}")))?
            }
        };
        let mut redis = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        if self.db != 0 || self.url.is_none() {
            redis = redis.set_db(self.db);
        }
        Ok(info.set_redis_settings(redis))
    }
}

/// `host:port`, `host` (port 6379), `[v6]:port` or `[v6]`.
fn parse_address(address: &str) -> Result<(String, u16)> {
    let bad = || {
        Error::InvalidOption(format!(
            "Redis address {address:?}: expected host:port (e.g. 127.0.0.1:6379)"
        ))
    };
    let a = address.trim();
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match a.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            Some(_) => (a, None), // a bare IPv6 address
            None => (a, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| bad())?,
        None => 6379,
    };
    Ok((host.to_owned(), port))
}

/// The URL with its user-info part (which may hold the password) masked.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        let ok = |a: &str| parse_address(a).expect("valid address");
        assert_eq!(ok("127.0.0.1:6379"), ("127.0.0.1".to_owned(), 6379));
        assert_eq!(ok("redis.local"), ("redis.local".to_owned(), 6379));
        assert_eq!(ok("[::1]:7000"), ("::1".to_owned(), 7000));
        assert_eq!(ok("[::1]"), ("::1".to_owned(), 6379));
        assert_eq!(ok("::1"), ("::1".to_owned(), 6379));
        for bad in ["", ":6379", "host:port", "host:70000", "[::1", "[::1]x"] {
            assert!(parse_address(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn passwords_are_not_shown() {
        let mut o = RedisOptions::from_url("redis://:secret@10.0.0.1:6379/2");
        o.password = Some("hunter2".into());
        let shown = format!("{o:?} {}", o.target());
        assert!(
            !shown.contains("secret") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("10.0.0.1:6379"), "{shown}");
    }

    #[test]
    fn url_and_overrides() {
        let o = RedisOptions::from_url("redis://:pw@10.0.0.1:6380/3");
        let info = o.connection_info().expect("valid url");
        assert_eq!(info.addr().to_string(), "10.0.0.1:6380");
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.redis_settings().password(), Some("pw"));
        let o = RedisOptions {
            password: Some("other".into()),
            db: 5,
            ..o
        };
        let info = o.connection_info().expect("valid url");
        assert_eq!(info.redis_settings().db(), 5);
        assert_eq!(info.redis_settings().password(), Some("other"));
        assert!(
            RedisOptions::from_url("http://x")
                .connection_info()
                .is_err()
        );
    }
}
