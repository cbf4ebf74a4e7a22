//! The HTTP trigger: listener → route → component instance → response.
//!
//! Each component gets a `ProxyHandler` (wasmtime-wasi-http's dispatcher),
//! which keeps warm instances and reuses them for later requests. Per
//! request we enforce the body limit (413), the wall-clock limit (504) and
//! turn traps into a 500 that carries the request id. Logs carry method,
//! route, status, duration and request id, never bodies or query strings.

use crate::router::{RouteMatch, Router};
use crate::runtime::{PreparedComponent, Runtime};
use crate::state::InstanceState;
use anyhow::Result;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use wasmtime::component::GuestTaskId;
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, Proxy, ProxyHandler, ShouldAccept, WorkerExpiration,
    WorkerState, WorkerStatus,
};

/// Per-request limits, and how long an instance lives.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_body_bytes: usize,
    pub timeout: Duration,
    /// Requests an instance serves before it is replaced, bounding
    /// whatever state a guest accumulates (1 = a fresh instance per
    /// request, as on Spin).
    pub max_instance_reuse: usize,
}

type HostBody = http_body_util::combinators::UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

/// An idle instance is dropped after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

struct ComponentHandler {
    component: Arc<PreparedComponent>,
    limits: RequestLimits,
}

impl HandlerState for ComponentHandler {
    type StoreData = InstanceState;
    type WorkerExpiration = Expiry;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<InstanceState, Expiry, Worker>> {
        let mut store = self.component.new_store();
        let service = self.component.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: |s: &mut InstanceState| s.http(),
            expiration: Expiry::new(self.limits.timeout),
            state: Worker {
                component: self.component.id.clone(),
                timeout: self.limits.timeout,
                max_reuse: self.limits.max_instance_reuse,
            },
        })
    }
}

struct Worker {
    component: String,
    timeout: Duration,
    max_reuse: usize,
}

impl WorkerState for Worker {
    type StoreData = InstanceState;
    type RequestData = String;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        // One request at a time per instance: the handler starts another
        // instance when all are busy, so a slow request never delays others.
        if total >= self.max_reuse {
            ShouldAccept::Never
        } else if concurrent == 0 {
            ShouldAccept::Yes
        } else {
            ShouldAccept::No
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, InstanceState>,
        _request_id: String,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>> {
        Box::pin(tokio::time::sleep(self.timeout))
    }

    fn drop(&self, _store: Store<InstanceState>, result: wasmtime::Result<()>) {
        if let Err(e) = result {
            tracing::error!(component = %self.component, error = %format!("{e:#}"), "instance failed");
        }
    }
}

/// Ends a worker whose request outlived the timeout (a guest spinning
/// without yielding) or that sat idle too long.
struct Expiry {
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Expiry {
    fn new(timeout: Duration) -> Self {
        Self { timeout, sleep: Box::pin(tokio::time::sleep(timeout)) }
    }
}

impl WorkerExpiration for Expiry {
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>, state: WorkerStatus, start: Instant) -> Poll<()> {
        let this = self.get_mut();
        let limit = match state {
            WorkerStatus::Idle => IDLE_TIMEOUT,
            // A grace period after the request's own timeout fired.
            WorkerStatus::Requests | WorkerStatus::PostReturn => this.timeout + Duration::from_secs(1),
        };
        let deadline = tokio::time::Instant::from_std(start + limit);
        if this.sleep.deadline() != deadline {
            this.sleep.as_mut().reset(deadline);
        }
        this.sleep.as_mut().poll(cx)
    }
}

/// The app's routes and their handlers.
pub struct HttpTrigger {
    router: Router,
    handlers: BTreeMap<String, ProxyHandler<ComponentHandler>>,
    limits: RequestLimits,
}

impl HttpTrigger {
    pub fn new(router: Router, runtime: &Runtime, limits: RequestLimits) -> Self {
        let handlers = runtime
            .components
            .iter()
            .map(|(id, c)| {
                (id.clone(), ProxyHandler::new(ComponentHandler { component: c.clone(), limits }))
            })
            .collect();
        Self { router, handlers, limits }
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let this = self.clone();
                    let local = stream.local_addr().ok();
                    let service = hyper::service::service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, std::convert::Infallible>(this.handle(req, peer, local).await) }
                    });
                    let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .http1_only()
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection closed with error");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        tracing::info!("shutting down: draining in-flight requests");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all requests drained"),
            () = tokio::time::sleep(self.limits.timeout + Duration::from_secs(5)) => {
                tracing::warn!("drain timed out; exiting with requests still open")
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        local: Option<SocketAddr>,
    ) -> Response<HostBody> {
        let started = Instant::now();
        let request_id = next_request_id();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let (mut response, route) = match self.router.route(&path) {
            None => (error_response(StatusCode::NOT_FOUND, "no route matches this path", &request_id), None),
            Some(m) => {
                let route = m.matched_route.clone();
                (self.dispatch(req, &m, peer, local, &request_id).await, Some(route))
            }
        };
        response
            .headers_mut()
            .insert("x-request-id", HeaderValue::from_str(&request_id).expect("hex id"));
        tracing::info!(
            request_id = %request_id,
            method = %method,
            route = route.as_deref().unwrap_or("-"),
            status = response.status().as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        response
    }

    async fn dispatch(
        &self,
        req: Request<Incoming>,
        m: &RouteMatch<'_>,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        request_id: &str,
    ) -> Response<HostBody> {
        let handler = &self.handlers[m.component];
        let (mut parts, body) = req.into_parts();

        if let Some(len) = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > self.limits.max_body_bytes as u64
        {
            return too_large(self.limits.max_body_bytes, request_id);
        }
        let body = match Limited::new(body, self.limits.max_body_bytes).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return too_large(self.limits.max_body_bytes, request_id);
            }
            Err(_) => {
                return error_response(StatusCode::BAD_REQUEST, "could not read the request body", request_id);
            }
        };

        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| local.map(|a| a.to_string()))
            .unwrap_or_else(|| "localhost".into());
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        let full_url = format!("http://{host}{path_and_query}");
        if let Ok(uri) = full_url.parse() {
            parts.uri = uri;
        }
        set_spin_headers(&mut parts.headers, m, &full_url, peer);

        let body: HostBody = Full::new(body).map_err(|never| match never {}).boxed_unsync();
        let request = Request::from_parts(parts, body);
        let call = handler.handle(request_id.to_string(), request);
        match tokio::time::timeout(self.limits.timeout, call).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) if e.is::<ExpirationError>() => timed_out(request_id),
            Err(_elapsed) => timed_out(request_id),
            Ok(Err(e)) => {
                tracing::error!(request_id, component = m.component, error = %format!("{e:#}"), "component failed");
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("the component failed while handling this request (request id {request_id})"),
                    request_id,
                )
            }
        }
    }
}

/// A request id: 32 hex digits, a random per-process half and a counter,
/// so unique without asking the kernel for randomness on every request
/// (ids name requests in logs and errors; nothing relies on guessing them
/// being hard).
fn next_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    format!("{process:016x}{:016x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Spin's request headers. Any `spin-*` header the client sent is dropped
/// first, so a component can trust them (e.g. `spin-client-addr`).
fn set_spin_headers(headers: &mut http::HeaderMap, m: &RouteMatch<'_>, full_url: &str, peer: SocketAddr) {
    let client_supplied: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("spin-"))
        .cloned()
        .collect();
    for k in client_supplied {
        headers.remove(k);
    }
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set("spin-full-url", full_url);
    set("spin-path-info", &m.path_info);
    set("spin-matched-route", &m.matched_route);
    set("spin-raw-component-route", &m.matched_route);
    set("spin-component-route", &m.component_route);
    set("spin-base-path", "/");
    set("spin-client-addr", &peer.to_string());
}

fn error_response(status: StatusCode, message: &str, request_id: &str) -> Response<HostBody> {
    let body = serde_json::json!({ "error": { "message": message, "request_id": request_id } });
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())).map_err(|never| match never {}).boxed_unsync())
        .expect("static response parts")
}

fn too_large(limit: usize, request_id: &str) -> Response<HostBody> {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body larger than the limit of {limit} bytes"),
        request_id,
    )
}

fn timed_out(request_id: &str) -> Response<HostBody> {
    error_response(StatusCode::GATEWAY_TIMEOUT, "the component did not answer in time", request_id)
}
