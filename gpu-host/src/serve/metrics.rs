//! Server metrics, rendered in the Prometheus text format at `/metrics`.
//! Counters and gauges are atomics; histograms take a short lock.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Latency buckets (seconds).
const SECONDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];
/// Batch-size buckets (sequences per step).
const SEQS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

pub struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            inner: Mutex::new((vec![0; bounds.len()], 0.0, 0)),
        }
    }

    pub fn observe(&self, v: f64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            g.0[i] += 1;
        }
        g.1 += v;
        g.2 += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, n) in self.bounds.iter().zip(&g.0) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            g.2, g.1, g.2
        );
    }
}

pub struct Metrics {
    /// (endpoint, status) → count.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    pub queue_depth: AtomicU64,
    pub running: AtomicU64,
    pub max_batch_seqs: AtomicU64,
    pub steps: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub prefix_hit_tokens: AtomicU64,
    pub cancelled: AtomicU64,
    pub preempted: AtomicU64,
    pub kv_blocks_total: AtomicU64,
    pub kv_blocks_used: AtomicU64,
    pub kv_blocks_cached: AtomicU64,
    /// f64 bits: generated tokens per second over the last second or so.
    tokens_per_second: AtomicU64,
    pub batch_seqs: Histogram,
    pub ttft: Histogram,
    pub latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            queue_depth: AtomicU64::new(0),
            running: AtomicU64::new(0),
            max_batch_seqs: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            prefix_hit_tokens: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            preempted: AtomicU64::new(0),
            kv_blocks_total: AtomicU64::new(0),
            kv_blocks_used: AtomicU64::new(0),
            kv_blocks_cached: AtomicU64::new(0),
            tokens_per_second: AtomicU64::new(0),
            batch_seqs: Histogram::new(SEQS),
            ttft: Histogram::new(SECONDS),
            latency: Histogram::new(SECONDS),
        }
    }
}

impl Metrics {
    pub fn request(&self, endpoint: &'static str, status: u16) {
        let mut g = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *g.entry((endpoint, status)).or_default() += 1;
    }

    pub fn set_tokens_per_second(&self, v: f64) {
        self.tokens_per_second.store(v.to_bits(), Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP gpu_host_requests_total HTTP requests by endpoint and status.\n# TYPE gpu_host_requests_total counter"
        );
        for ((endpoint, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "gpu_host_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let mut scalar = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        let g = |a: &AtomicU64| a.load(Relaxed).to_string();
        scalar(
            "gpu_host_queue_depth",
            "gauge",
            "Requests waiting to join the running batch.",
            g(&self.queue_depth),
        );
        scalar(
            "gpu_host_running_sequences",
            "gauge",
            "Sequences in the running batch.",
            g(&self.running),
        );
        scalar(
            "gpu_host_batch_sequences_max",
            "gauge",
            "Most sequences seen in one forward step.",
            g(&self.max_batch_seqs),
        );
        scalar(
            "gpu_host_steps_total",
            "counter",
            "Forward steps run.",
            g(&self.steps),
        );
        scalar(
            "gpu_host_prompt_tokens_total",
            "counter",
            "Prompt tokens received.",
            g(&self.prompt_tokens),
        );
        scalar(
            "gpu_host_generated_tokens_total",
            "counter",
            "Tokens generated.",
            g(&self.generated_tokens),
        );
        scalar(
            "gpu_host_prefix_cache_hit_tokens_total",
            "counter",
            "Prompt tokens served from the prefix cache.",
            g(&self.prefix_hit_tokens),
        );
        scalar(
            "gpu_host_cancelled_total",
            "counter",
            "Requests cancelled because the client went away.",
            g(&self.cancelled),
        );
        scalar(
            "gpu_host_preempted_total",
            "counter",
            "Sequences preempted (recomputed later) for lack of KV cache.",
            g(&self.preempted),
        );
        scalar(
            "gpu_host_tokens_per_second",
            "gauge",
            "Generated tokens per second, recent.",
            format!(
                "{:.2}",
                f64::from_bits(self.tokens_per_second.load(Relaxed))
            ),
        );
        scalar(
            "gpu_host_kv_cache_blocks_total",
            "gauge",
            "KV cache blocks.",
            g(&self.kv_blocks_total),
        );
        scalar(
            "gpu_host_kv_cache_blocks_used",
            "gauge",
            "KV cache blocks held by sequences.",
            g(&self.kv_blocks_used),
        );
        scalar(
            "gpu_host_kv_cache_blocks_cached",
            "gauge",
            "Idle KV cache blocks kept for prefix reuse.",
            g(&self.kv_blocks_cached),
        );
        let total = self.kv_blocks_total.load(Relaxed).max(1) as f64;
        scalar(
            "gpu_host_kv_cache_usage_ratio",
            "gauge",
            "Fraction of KV cache blocks held by sequences.",
            format!("{:.4}", self.kv_blocks_used.load(Relaxed) as f64 / total),
        );
        self.batch_seqs.render(
            &mut out,
            "gpu_host_batch_sequences",
            "Sequences per forward step.",
        );
        self.ttft.render(
            &mut out,
            "gpu_host_time_to_first_token_seconds",
            "Time from arrival to the first generated token.",
        );
        self.latency.render(
            &mut out,
            "gpu_host_request_duration_seconds",
            "Time from arrival to the last token.",
        );
        out
    }
}
