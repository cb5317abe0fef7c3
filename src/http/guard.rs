//! What every request passes before its route: the Host header on a loopback bind, then the
//! bearer token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::problem::{codes, Problem};

/// The guard's settings.
pub struct Guard {
    /// SHA-256 of the token, when one is set.
    token: Option<[u8; 32]>,
    /// On a loopback bind: the host names a request may be addressed to.
    loopback: bool,
}

impl Guard {
    pub fn new(token: Option<&str>, bound: SocketAddr) -> Self {
        Self {
            token: token.map(digest),
            loopback: bound.ip().is_loopback(),
        }
    }

    /// Whether `headers` carry the token (always, when none is set). Compares SHA-256 digests
    /// byte by byte without stopping early: the time is the same for every wrong token, whatever
    /// its length or how much of it is right.
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.token else { return true };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .unwrap_or("");
        let got = digest(given);
        let diff = want
            .iter()
            .zip(got.iter())
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        std::hint::black_box(diff) == 0
    }

    /// On a loopback bind, whether the Host header names a loopback host (`localhost`,
    /// `127.0.0.1`, `[::1]`, any port): a page of another site that resolves its own name to
    /// 127.0.0.1 (DNS rebinding) sends its own name and is refused. A request without a Host
    /// header comes from no browser and is let through.
    pub fn host_allowed(&self, headers: &HeaderMap) -> bool {
        if !self.loopback {
            return true;
        }
        let Some(host) = headers.get(header::HOST) else {
            return true;
        };
        let Ok(host) = host.to_str() else {
            return false;
        };
        let name = if let Some(rest) = host.strip_prefix('[') {
            match rest.split_once(']') {
                Some((ip, _)) => ip,
                None => return false,
            }
        } else {
            host.rsplit_once(':').map_or(host, |(name, _)| name)
        };
        let name = name.to_ascii_lowercase();
        name == "localhost"
            || name.ends_with(".localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The routes that need no token: the probes, and the console's page (static, no data: it asks
/// for the token and sends it on every call).
fn open_route(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/")
}

/// The middleware: Host first (403), then the token (401).
pub async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if !guard.host_allowed(request.headers()) {
        return Problem::new(
            StatusCode::FORBIDDEN,
            codes::HOST_NOT_ALLOWED,
            "this node serves a loopback address: the Host header must name localhost, \
             127.0.0.1 or [::1]",
        )
        .into_response();
    }
    if !open_route(request.uri().path()) && !guard.authorized(request.headers()) {
        let mut r = Problem::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "this route needs the header 'Authorization: Bearer <token>' with the node's token",
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"cqrs\""),
        );
        return r;
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_token_must_match_exactly() {
        let g = Guard::new(Some("s3cret"), "127.0.0.1:1".parse().unwrap());
        assert!(g.authorized(&headers(&[("authorization", "Bearer s3cret")])));
        assert!(g.authorized(&headers(&[("authorization", "bearer s3cret")])));
        assert!(!g.authorized(&headers(&[("authorization", "Bearer s3cre")])));
        assert!(!g.authorized(&headers(&[("authorization", "Bearer s3cret2")])));
        assert!(!g.authorized(&headers(&[("authorization", "Basic s3cret")])));
        assert!(!g.authorized(&headers(&[])));
        let open = Guard::new(None, "127.0.0.1:1".parse().unwrap());
        assert!(open.authorized(&headers(&[])));
    }

    #[test]
    fn a_loopback_bind_takes_only_loopback_host_names() {
        let g = Guard::new(None, "127.0.0.1:8080".parse().unwrap());
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "LocalHost",
        ] {
            assert!(g.host_allowed(&headers(&[("host", ok)])), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8080", "10.0.0.1:8080", "[::1"] {
            assert!(!g.host_allowed(&headers(&[("host", bad)])), "{bad}");
        }
        let public = Guard::new(Some("t"), "0.0.0.0:8080".parse().unwrap());
        assert!(public.host_allowed(&headers(&[("host", "evil.example")])));
    }
}
