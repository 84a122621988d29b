//! The HTTP server: the router on hyper's HTTP/1.1, with a time limit on each request's head.
//!
//! `axum::serve` gives hyper no timer, so a client that sends half a request head keeps its
//! connection (and a task) for as long as it likes, and keeps a graceful shutdown waiting
//! until its grace runs out. Here a request's head must arrive within the header timeout
//! (`WORKLEDGER_HEADER_TIMEOUT`, 75 s by default); the connection is closed otherwise. The
//! same limit closes a keep-alive connection that sat idle that long (clients open a new
//! one); the default is above the idle timeouts of the usual reverse proxies, which should
//! close first.
//!
//! The handlers' own time limit is `WORKLEDGER_REQUEST_TIMEOUT` (`api_common::layers`).

use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// Serves `router` on `listener` until `shutdown` completes; then accepts no more
/// connections, lets each open one finish the request it is answering, and returns once all
/// are closed. Each request carries its peer's [`ConnectInfo`]; its head must arrive within
/// `header_timeout`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if !passing(&error) {
                        tracing::error!(%error, "accepting a connection failed; retrying in a second");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            () = &mut shutdown => break,
                        }
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = router
            .clone()
            .map_request(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, peer = %peer, "an HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// Whether a failed accept is only a connection its client gave up on. Anything else (out of
/// file descriptors, say) is logged and waited out for a moment rather than retried at once
/// in a busy loop.
fn passing(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}
