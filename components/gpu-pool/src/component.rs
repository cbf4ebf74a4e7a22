//! The export of `therapy:inference/pool` over HTTP: picks a host (least
//! outstanding requests among the healthy, `crate::choice::order`), sends
//! the chat request, and on a connection failure or timeout before any byte
//! came back marks that host down for a while and tries the next one. Hosts
//! whose down mark has expired must answer `GET /health` before they get
//! traffic again.
//!
//! Cross-request state is in the key-value store (`chat-pool/...`), since
//! concurrent requests run in separate instances. Its updates are
//! read-modify-write without a lock: counts may drift by a request under
//! contention, which only perturbs the load balance, never correctness.

use crate::choice::{HostState, order, parse_hosts};
use bytes::Bytes;
use futures::future::{Either, select};
use spin_sdk::http::{FullBody, Response};
use spin_sdk::key_value::Store;
use spin_sdk::http::body::IncomingBodyExt;
use futures::StreamExt;

/// How long a host that failed stays out of rotation.
const DOWN_MS: u64 = 5_000;
const HEALTH_TIMEOUT_MS: u64 = 1_000;

pub struct Pool {
    pub hosts: Vec<String>,
    token: String,
    kv: Store,
    /// Time allowed until a host answers with response headers.
    connect_timeout_ms: u64,
    /// An outstanding count not updated for this long is treated as 0: an
    /// instance that died mid-request (trap, edge timeout) never released.
    stale_ms: u64,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `f`, or `None` when `ms` pass first.
pub async fn with_timeout<F: std::future::Future>(ms: u64, f: F) -> Option<F::Output> {
    let timer = spin_sdk::wasip3::clocks::monotonic_clock::wait_for(ms.saturating_mul(1_000_000));
    futures::pin_mut!(f);
    futures::pin_mut!(timer);
    match select(f, timer).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

wit_bindgen::generate!({ path: "../../wit/inference.wit", world: "pool-provider", generate_all });

use exports::therapy::inference::pool::{Failure, Guest, Reply};

fn failure(status: u16, message: impl Into<String>) -> Failure {
    Failure { status, message: message.into() }
}

/// A chosen host's answer: the caller must `release` it when the body is done.
pub struct Upstream {
    /// `None` for a failing host's error answer passed on as is.
    pub host: Option<usize>,
    pub response: Response,
}

impl Pool {
    pub async fn new(hosts: Vec<String>, token: String, connect_timeout_ms: u64, response_timeout_ms: u64) -> Result<Pool, Failure> {
        let kv = Store::open("default").await.map_err(|_| failure(500, "the pool cannot open the key-value store `default`"))?;
        let stale_ms = connect_timeout_ms.saturating_add(response_timeout_ms).saturating_add(10_000);
        Ok(Pool { hosts, token, kv, connect_timeout_ms, stale_ms })
    }

    fn key(&self, i: usize, what: &str) -> String {
        format!("chat-pool/{}/{what}", self.hosts[i])
    }

    async fn get_num(&self, key: &str) -> i64 {
        match self.kv.get(key).await {
            Ok(Some(v)) => std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
            _ => 0,
        }
    }

    async fn set_num(&self, key: &str, v: i64) {
        let _ = self.kv.set(key, v.to_string().as_bytes()).await;
    }

    /// Outstanding requests on host `i`, stored as `count:updated_ms`.
    async fn outstanding(&self, i: usize) -> i64 {
        let raw = match self.kv.get(&self.key(i, "outstanding")).await {
            Ok(Some(v)) => String::from_utf8(v).unwrap_or_default(),
            _ => return 0,
        };
        let (count, at) = raw.split_once(':').unwrap_or((&raw, "0"));
        let at: u64 = at.parse().unwrap_or(0);
        if now_ms().saturating_sub(at) > self.stale_ms {
            return 0;
        }
        count.parse().unwrap_or(0)
    }

    async fn state(&self, i: usize) -> HostState {
        HostState {
            outstanding: self.outstanding(i).await,
            down_until_ms: self.get_num(&self.key(i, "down_until")).await.max(0) as u64,
        }
    }

    async fn add_outstanding(&self, i: usize, delta: i64) {
        let v = (self.outstanding(i).await + delta).max(0);
        let _ = self.kv.set(&self.key(i, "outstanding"), format!("{v}:{}", now_ms()).as_bytes()).await;
    }

    pub async fn mark_down(&self, i: usize) {
        self.set_num(&self.key(i, "down_until"), (now_ms() + DOWN_MS) as i64).await;
    }

    async fn mark_up(&self, i: usize) {
        let _ = self.kv.delete(&self.key(i, "down_until")).await;
    }

    /// The body of the request is done: one fewer outstanding on `host`.
    pub async fn release(&self, host: Option<usize>) {
        if let Some(i) = host {
            self.add_outstanding(i, -1).await;
        }
    }

    async fn healthy(&self, i: usize) -> bool {
        let req = http::Request::builder()
            .method("GET")
            .uri(format!("{}/health", self.hosts[i]))
            .body(spin_sdk::http::EmptyBody::new())
            .expect("valid request");
        matches!(with_timeout(HEALTH_TIMEOUT_MS, spin_sdk::http::send(req)).await, Some(Ok(r)) if r.status().is_success())
    }

    /// Sends `POST /v1/chat/completions` with `body` to the best host,
    /// failing over before any byte of a reply was received.
    pub async fn send_chat(&self, body: &[u8]) -> Result<Upstream, Failure> {
        if self.hosts.is_empty() {
            return Err(failure(503, "no gpu-host is configured (variable gpu_hosts)"));
        }
        let mut states = Vec::with_capacity(self.hosts.len());
        for i in 0..self.hosts.len() {
            states.push(self.state(i).await);
        }
        let mut rot = [0u8; 1];
        let _ = getrandom::fill(&mut rot);
        let candidates = order(&states, now_ms(), rot[0] as usize);
        let mut last_busy: Option<Upstream> = None;
        for c in candidates {
            if c.probe {
                if !self.healthy(c.index).await {
                    self.mark_down(c.index).await;
                    continue;
                }
                self.mark_up(c.index).await;
            }
            self.add_outstanding(c.index, 1).await;
            let req = http::Request::builder()
                .method("POST")
                .uri(format!("{}/v1/chat/completions", self.hosts[c.index]))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {}", self.token))
                .body(FullBody::new(Bytes::copy_from_slice(body)))
                .map_err(|_| failure(500, "building the upstream request failed"))?;
            match with_timeout(self.connect_timeout_ms, spin_sdk::http::send(req)).await {
                Some(Ok(response)) => {
                    let status = response.status().as_u16();
                    // Overloaded or failing host: another may serve it (no
                    // token was streamed yet). 4xx are the request's fault.
                    if matches!(status, 502..=504) {
                        self.add_outstanding(c.index, -1).await;
                        last_busy = Some(Upstream { host: None, response });
                        continue;
                    }
                    return Ok(Upstream { host: Some(c.index), response });
                }
                Some(Err(e)) => {
                    eprintln!("gpu-pool: gpu-host {} failed: {e:?}; trying another", self.hosts[c.index]);
                    self.add_outstanding(c.index, -1).await;
                    self.mark_down(c.index).await;
                }
                None => {
                    eprintln!("gpu-pool: gpu-host {} timed out; trying another", self.hosts[c.index]);
                    self.add_outstanding(c.index, -1).await;
                    self.mark_down(c.index).await;
                }
            }
        }
        if let Some(busy) = last_busy {
            return Ok(busy);
        }
        Err(failure(503, format!("no healthy gpu-host is available ({} configured); retry shortly", self.hosts.len())))
    }
}

async fn var(name: &str) -> String {
    spin_sdk::variables::get(name).await.unwrap_or_default()
}

fn num(s: String, default: u64) -> u64 {
    s.trim().parse().unwrap_or(default)
}

/// A whole (non-streamed) reply, failing over to another host also when a
/// host dies before its body is complete (nothing has left the edge yet).
async fn complete(pool: &Pool, body: &[u8], response_timeout_ms: u64) -> Result<(u16, Vec<u8>), Failure> {
    let mut last = failure(503, "no healthy gpu-host is available; retry shortly");
    for _ in 0..pool.hosts.len().max(1) {
        let up = pool.send_chat(body).await?;
        let status = up.response.status().as_u16();
        let read = with_timeout(response_timeout_ms, up.response.into_body().bytes()).await;
        pool.release(up.host).await;
        match read {
            Some(Ok(bytes)) => return Ok((status, bytes.to_vec())),
            Some(Err(_)) => last = failure(502, "a gpu-host failed while answering"),
            None => last = failure(504, "the gpu-host did not answer in time"),
        }
        if let Some(i) = up.host {
            pool.mark_down(i).await;
        }
    }
    Err(last)
}

fn whole(status: u16, bytes: Vec<u8>) -> Reply {
    let (mut tx, rx) = wit_stream::new::<u8>();
    wit_bindgen::spawn(async move {
        tx.write_all(bytes).await;
    });
    Reply { status, body: rx }
}

struct Component;

impl Guest for Component {
    async fn chat(body: Vec<u8>, buffered: bool) -> Result<Reply, Failure> {
        let hosts = parse_hosts(&var("gpu_hosts").await);
        let token = var("gpu_host_token").await.trim().to_string();
        let connect_ms = num(var("upstream_connect_timeout_ms").await, 10_000);
        let response_ms = num(var("upstream_timeout_ms").await, 120_000);
        let pool = Pool::new(hosts, token, connect_ms, response_ms).await?;
        if buffered {
            let (status, bytes) = complete(&pool, &body, response_ms).await?;
            return Ok(whole(status, bytes));
        }
        for _ in 0..pool.hosts.len().max(1) {
            let Upstream { host, response } = pool.send_chat(&body).await?;
            let status = response.status().as_u16();
            if status != 200 {
                let bytes = response.into_body().bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                pool.release(host).await;
                return Ok(whole(status, bytes));
            }
            let mut upstream = Box::pin(response.into_body().stream());
            let first = match with_timeout(response_ms, upstream.next()).await {
                Some(Some(Ok(b))) => b,
                _ => {
                    pool.release(host).await;
                    if let Some(i) = host {
                        pool.mark_down(i).await;
                    }
                    continue;
                }
            };
            let (mut tx, rx) = wit_stream::new::<u8>();
            wit_bindgen::spawn(async move {
                let mut ok = tx.write_all(first.to_vec()).await.is_empty();
                while ok {
                    match upstream.next().await {
                        Some(Ok(b)) => ok = tx.write_all(b.to_vec()).await.is_empty(),
                        _ => break,
                    }
                }
                drop(tx);
                pool.release(host).await;
            });
            return Ok(Reply { status, body: rx });
        }
        Err(failure(503, "no healthy gpu-host is available; retry shortly"))
    }
}

export!(Component);
