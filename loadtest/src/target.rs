//! Where a scenario sends its load: a parsed `http://` or `ws://` URL with
//! its address resolved once. By default only loopback addresses are
//! accepted, so a mistyped URL cannot aim a load test at another machine.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{bail, Context as _};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port` as written in the URL, for the `Host` header.
    pub authority: String,
    pub addr: SocketAddr,
    /// The URL's path without a trailing slash ("" for the root).
    pub base_path: String,
}

impl Target {
    /// Parses `http://host:port/path` or `ws://host:port/path` (no TLS).
    pub(crate) fn parse(url: &str, allow_remote: bool) -> anyhow::Result<Target> {
        let (scheme, rest) = url
            .split_once("://")
            .context("URL needs a scheme (http:// or ws://)")?;
        let default_port = match scheme {
            "http" | "ws" => 80,
            "https" | "wss" => {
                bail!("TLS URLs are not supported by roost-load; use http:// or ws://")
            }
            other => bail!("unsupported URL scheme {other:?}"),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            bail!("URL {url:?} has no host");
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:{default_port}")
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("resolving {with_port}"))?
            .next()
            .with_context(|| format!("{with_port} resolves to no address"))?;
        if !allow_remote && !addr.ip().is_loopback() {
            bail!("{addr} is not a loopback address; pass --allow-remote to load a remote server");
        }
        Ok(Target {
            authority: authority.to_string(),
            addr,
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    /// `base_path` + `suffix` (which starts with '/').
    pub(crate) fn path(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.base_path)
    }
}

/// Percent-encodes a path segment (object or document names).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_urls() {
        let t = Target::parse("http://127.0.0.1:8787", false).expect("valid");
        assert_eq!(t.addr, "127.0.0.1:8787".parse().expect("addr"));
        assert_eq!(t.base_path, "");
        assert_eq!(t.authority, "127.0.0.1:8787");
        let t = Target::parse("ws://localhost:1234/v1/yjs/", false).expect("valid");
        assert_eq!(t.base_path, "/v1/yjs");
        assert_eq!(t.path("/doc"), "/v1/yjs/doc");
        assert!(t.addr.ip().is_loopback());
        let t = Target::parse("ws://127.0.0.1", false).expect("valid");
        assert_eq!(t.addr.port(), 80);
    }

    #[test]
    fn refuses_remote_and_tls() {
        assert!(Target::parse("http://192.0.2.1:80", false).is_err());
        assert!(Target::parse("http://192.0.2.1:80", true).is_ok());
        assert!(Target::parse("https://127.0.0.1:1", false).is_err());
        assert!(Target::parse("127.0.0.1:1", false).is_err());
        assert!(Target::parse("http://", false).is_err());
    }

    #[test]
    fn encodes_segments() {
        assert_eq!(encode_segment("bench-1"), "bench-1");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }
}
