//! `cqrs-http-floor`: the HTTP benchmark's floor (benches/http/run.sh, docs/benchmarks.md).
//!
//! A minimal axum server that answers every `GET` with `200 {"status":"ok"}` (the body of the
//! node's `/healthz`), touching nothing else: no node, no guard, no writer thread. It runs on
//! the node's own runtime ([`cqrs_node::http::runtime`]: the same tokio and axum, the same
//! worker threads), with the same allocator (the library's mimalloc) and transparent huge pages
//! off, as `cqrs --http` does; so the node's requests/s divided by this program's, measured in
//! the same run by the same load generator, is what the node's routes cost over the HTTP
//! stack itself.
//!
//! Usage: `cqrs-http-floor ADDR` (e.g. `127.0.0.1:0`); it prints `listening on http://ADDR`
//! once bound, and serves until SIGTERM/SIGINT.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

async fn hello() -> Response {
    let mut r = (StatusCode::OK, r#"{"status":"ok"}"#).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn main() -> std::io::Result<()> {
    cqrs_node::disable_transparent_huge_pages();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    cqrs_node::http::runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let router = Router::new().fallback(axum::routing::get(hello));
        let stop = async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
    })
}
