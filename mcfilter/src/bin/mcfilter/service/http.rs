//! The metrics server: `/metrics`, `/healthz`, `/livez`, `/readyz`, with bounded connections
//! and timeouts.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
};

use super::Shared;
use mcfilter::StateDir;

use crate::{config::Config, metrics};

/// Connections the metrics server holds at once; one more is closed as it is accepted, so idle
/// clients cannot use up the service's file descriptors.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// A request's headers must have arrived this long after the connection opened.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection serves one request (no keep-alive) and lives this long at the most.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The metrics server's accept loop: at most [`MAX_CONNECTIONS`] connections, each bounded in
/// time ([`HEADER_TIMEOUT`], [`CONNECTION_TIMEOUT`]) and serving one request.
pub(super) async fn serve_http(listener: tokio::net::TcpListener, router: Router) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors, or a connection reset while queued: try again soon.
                log::debug!("metrics: accept: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(permit);
        });
    }
}

pub(super) async fn serve_metrics(
    State(shared): State<Arc<Shared>>,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let _one_at_a_time = shared.scrape.lock().await;
    let config = shared.config.lock().expect("config lock").clone();
    let reloads = *shared.reloads.lock().expect("reloads lock");
    let rendered = tokio::task::spawn_blocking(move || metrics::render(&config, reloads)).await;
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    match rendered {
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            body,
        ),
        Ok(Err(err)) => (StatusCode::SERVICE_UNAVAILABLE, text, format!("{err}\n")),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, text, format!("{err}\n")),
    }
}

/// `/livez`: the process answers (Kubernetes' liveness: restart it when it does not).
pub(super) async fn serve_live() -> &'static str {
    "ok\n"
}

/// `/healthz` and `/readyz`: every configured interface has the filter (Kubernetes' readiness).
pub(super) async fn serve_health(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    let config = shared.config.lock().expect("config lock").clone();
    let checked = tokio::task::spawn_blocking(move || health(&config)).await;
    match checked {
        Ok(Ok(text)) => (StatusCode::OK, text),
        Ok(Err(unhealthy)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{unhealthy}\n")),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
    }
}

/// Why the service is not ready.
#[derive(Debug, thiserror::Error)]
enum Unhealthy {
    #[error(transparent)]
    Status(#[from] mcfilter::Error),
    #[error("not attached: {}", .0.join(", "))]
    NotAttached(Vec<String>),
}

/// Healthy when the program is attached on every configured interface; the answer names this
/// binary's build and each interface's program's.
fn health(config: &Config) -> Result<String, Unhealthy> {
    let status = mcfilter::status(&StateDir::new(&config.state_dir))?;
    let missing: Vec<&str> = config
        .interfaces
        .iter()
        .map(|i| i.name.as_str())
        .filter(|name| {
            !status
                .interfaces
                .iter()
                .any(|s| s.present && s.name == *name)
        })
        .collect();
    if missing.is_empty() {
        let mut text = format!("ok\nbuild {}\n", status.build);
        for iface in &status.interfaces {
            text += &format!(
                "{} {}\n",
                iface.name,
                iface.build.as_deref().unwrap_or("earlier")
            );
        }
        Ok(text)
    } else {
        Err(Unhealthy::NotAttached(
            missing.into_iter().map(str::to_owned).collect(),
        ))
    }
}
