//! Outbound `wasi:http` requests, limited to the component's
//! `allowed_outbound_hosts` (Spin's syntax: `scheme://host[:port]`, with `*`
//! for any scheme, host or port and `*.example.com` for subdomains).

use bytes::Bytes;
use http::uri::Scheme;
use std::sync::Arc;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks, default_send_request};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com`: any subdomain of `example.com`.
    Subdomain(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    /// No port written: the scheme's default.
    Default,
    Exact(u16),
    Range(u16, u16),
}

impl AllowedHost {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or("expected scheme://host[:port], e.g. https://api.example.com")?;
        let scheme = match scheme {
            "*" => None,
            "http" | "https" => Some(scheme.to_string()),
            other => return Err(format!("unsupported scheme {other:?}")),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err("an allowed host cannot contain a path".into());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
            _ => (rest, None),
        };
        let host = match host {
            "" => return Err("missing host".into()),
            "*" => HostPattern::Any,
            h if h.starts_with("*.") => HostPattern::Subdomain(h[2..].to_ascii_lowercase()),
            h if h.contains('*') => return Err("`*` must be the whole host or its first label".into()),
            h => HostPattern::Exact(h.to_ascii_lowercase()),
        };
        let port = match port {
            None => PortPattern::Default,
            Some("*") => PortPattern::Any,
            Some(p) if p.contains("..") => {
                let (a, b) = p.split_once("..").unwrap();
                let a = a.parse().map_err(|_| format!("invalid port range {p:?}"))?;
                let b = b.parse().map_err(|_| format!("invalid port range {p:?}"))?;
                PortPattern::Range(a, b)
            }
            Some(p) => PortPattern::Exact(p.parse().map_err(|_| format!("invalid port {p:?}"))?),
        };
        Ok(Self { scheme, host, port })
    }

    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == scheme);
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(h) => *h == host,
            HostPattern::Subdomain(d) => host.ends_with(&format!(".{d}")),
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Default => port == default_port,
            PortPattern::Exact(p) => p == port,
            PortPattern::Range(a, b) => (a..=b).contains(&port),
        };
        scheme_ok && host_ok && port_ok
    }
}

/// The `wasi:http` hooks of one component instance.
pub struct OutboundHooks {
    pub allowed: Arc<Vec<AllowedHost>>,
}

impl OutboundHooks {
    fn permits(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme().unwrap_or(&Scheme::HTTPS).as_str().to_string();
        let Some(host) = uri.host() else { return false };
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        self.allowed.iter().any(|a| a.allows(&scheme, host, port))
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        _ = fut;
        if !self.permits(request.uri()) {
            tracing::warn!(
                host = request.uri().host().unwrap_or(""),
                "outbound request denied: host not in allowed_outbound_hosts"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = default_send_request(request, options).await?;
            Ok((res.map(|b| b.map_frame(|f| f.map_data(Bytes::from)).boxed_unsync()), Box::new(io) as IoFuture))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let a = AllowedHost::parse("https://api.example.com").unwrap();
        assert!(a.allows("https", "api.example.com", 443));
        assert!(!a.allows("https", "api.example.com", 8443));
        assert!(!a.allows("http", "api.example.com", 80));
        let a = AllowedHost::parse("http://127.0.0.1:*").unwrap();
        assert!(a.allows("http", "127.0.0.1", 9999));
        assert!(!a.allows("http", "127.0.0.2", 9999));
        let a = AllowedHost::parse("*://*.example.com:8000..8010").unwrap();
        assert!(a.allows("http", "x.example.com", 8005));
        assert!(!a.allows("http", "example.com", 8005));
        assert!(AllowedHost::parse("*://*:*").unwrap().allows("https", "anything", 1));
        assert!(AllowedHost::parse("example.com").is_err());
        assert!(AllowedHost::parse("ftp://x").is_err());
    }
}
