//! The serving engine: one thread that owns the model and the paged KV
//! cache and runs continuous batching. Each step it takes in new requests,
//! drops cancelled ones (their client went away), admits waiting requests
//! while KV blocks last, runs one forward pass over every running sequence
//! (one token for those decoding, a chunk of prompt for those prefilling,
//! within a token budget), samples, and streams text back. Sequences join
//! and leave the batch between steps.
//!
//! When the cache runs out mid-decode, the most recently admitted sequence
//! is preempted: its blocks are freed and it waits to be recomputed from
//! its tokens so far (its output is unaffected).

use super::blocks::{BlockManager, chain_hash, prefix_hashes};
use super::metrics::Metrics;
use crate::adapter::MoeLoraAdapter;
use crate::backend::Backend;
use crate::generate::{GenerateParams, Sampler, StreamStep, TextStream};
use crate::model::{BatchActivations, BatchOutput, BatchSeq, Llama, PagedKvCache, SeqOutput};
use crate::tokenizer::TextTokenizer;
use anyhow::Result;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// What the engine tells a request's handler.
#[derive(Debug)]
pub enum Event {
    /// More generated text.
    Text(String),
    /// Generation ended.
    Done(Finish),
    /// Embeddings of every input, in order, and the tokens they took.
    Embeddings(Vec<Vec<f32>>, usize),
    /// The request failed inside the engine.
    Error(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS or a stop string.
    Stop,
    /// `max_tokens` or the context is full.
    Length,
}

#[derive(Clone, Copy, Debug)]
pub struct Finish {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub cached_tokens: usize,
}

pub enum Job {
    Generate {
        prompt: Vec<u32>,
        params: GenerateParams,
        /// The repetition penalty looks at only this many latest tokens
        /// (Spin's `repeatPenaltyLastNTokenCount`); `None`: all.
        penalty_window: Option<usize>,
        /// The MoE-LoRA adapter (by name) the request asked for.
        adapter: Option<(String, Arc<MoeLoraAdapter>)>,
        events: UnboundedSender<Event>,
    },
    Embed {
        inputs: Vec<Vec<u32>>,
        events: UnboundedSender<Event>,
    },
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most sequences in one step.
    pub max_batch_seqs: usize,
    /// Most tokens in one step (prefill chunks share it).
    pub max_batch_tokens: usize,
    pub block_size: usize,
    pub num_blocks: usize,
    /// Longest sequence (prompt + output).
    pub context_len: usize,
    /// Most requests waiting to start; more are refused.
    pub max_queue: usize,
    /// Separates prefix-cache entries of different models.
    pub cache_salt: u64,
}

#[derive(Debug)]
pub enum SubmitError {
    QueueFull,
    Stopped,
}

/// The handlers' side: submits jobs.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Job>,
    queued: Arc<AtomicUsize>,
    config: EngineConfig,
}

impl EngineHandle {
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        // Jobs sent but not yet running count against the queue.
        let before = self.queued.fetch_add(1, Relaxed);
        if before >= self.config.max_queue {
            self.queued.fetch_sub(1, Relaxed);
            return Err(SubmitError::QueueFull);
        }
        self.tx.send(job).map_err(|_| {
            self.queued.fetch_sub(1, Relaxed);
            SubmitError::Stopped
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }
}

/// Starts the engine thread.
pub fn start<B: Backend>(
    model: Llama<B>,
    tokenizer: Arc<TextTokenizer>,
    config: EngineConfig,
    metrics: Arc<Metrics>,
) -> Result<EngineHandle> {
    let cache = model.new_paged_cache(config.block_size, config.num_blocks)?;
    let act = model.new_batch_activations(config.max_batch_tokens, config.max_batch_seqs)?;
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    metrics
        .kv_blocks_total
        .store(config.num_blocks as u64, Relaxed);
    let mut engine = Engine {
        blocks: BlockManager::new(config.num_blocks, config.block_size),
        model,
        tokenizer,
        cache,
        act,
        out: BatchOutput::default(),
        config: config.clone(),
        metrics,
        queued: queued.clone(),
        rx,
        waiting: VecDeque::new(),
        running: Vec::new(),
        groups: HashMap::new(),
        next_group: 0,
        rate: (Instant::now(), 0),
    };
    std::thread::Builder::new()
        .name("gpu-host-engine".into())
        .spawn(move || engine.run())?;
    Ok(EngineHandle { tx, queued, config })
}

struct Seq {
    /// Prompt and generated tokens so far.
    tokens: Vec<u32>,
    prompt_len: usize,
    /// Tokens whose keys and values are in the cache.
    computed: usize,
    blocks: Vec<u32>,
    /// Prefix hash of each full block registered so far.
    hashes: Vec<u64>,
    /// Separates prefix-cache entries of different models and adapters.
    salt: u64,
    adapter: Option<Arc<MoeLoraAdapter>>,
    kind: SeqKind,
}

enum SeqKind {
    Generate(Box<Generation>),
    Embed {
        group: u64,
        index: usize,
        sum: Vec<f32>,
    },
}

struct Generation {
    params: GenerateParams,
    penalty_window: Option<usize>,
    sampler: Sampler,
    stream: TextStream,
    generated: Vec<u32>,
    events: UnboundedSender<Event>,
    arrived: Instant,
    first_token: bool,
    cached_tokens: usize,
    /// Why it ended, once it has.
    finish: Option<FinishReason>,
    stopped_by_string: bool,
}

struct EmbedGroup {
    events: UnboundedSender<Event>,
    results: Vec<Option<Vec<f32>>>,
    tokens: usize,
}

struct Engine<B: Backend> {
    model: Llama<B>,
    tokenizer: Arc<TextTokenizer>,
    cache: PagedKvCache<B>,
    act: BatchActivations<B>,
    out: BatchOutput,
    blocks: BlockManager,
    config: EngineConfig,
    metrics: Arc<Metrics>,
    queued: Arc<AtomicUsize>,
    rx: mpsc::Receiver<Job>,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    groups: HashMap<u64, EmbedGroup>,
    next_group: u64,
    /// (window start, tokens generated in it) for the tokens/s gauge.
    rate: (Instant, u64),
}

/// One sequence's part of the next step.
struct Planned {
    seq: usize,
    len: usize,
    output: SeqOutput,
}

impl<B: Backend> Engine<B> {
    fn run(&mut self) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                self.metrics.set_tokens_per_second(0.0);
                match self.rx.recv() {
                    Ok(job) => self.accept(job),
                    Err(_) => return, // the server is gone
                }
            }
            while let Ok(job) = self.rx.try_recv() {
                self.accept(job);
            }
            self.drop_cancelled();
            self.admit();
            if let Err(e) = self.step() {
                // A failed step poisons every running sequence's state.
                tracing::error!(error = %format!("{e:#}"), "forward step failed");
                for seq in std::mem::take(&mut self.running) {
                    self.fail(seq, &format!("inference failed: {e:#}"));
                }
            }
            self.update_gauges();
        }
    }

    fn accept(&mut self, job: Job) {
        match job {
            Job::Generate {
                prompt,
                params,
                penalty_window,
                adapter,
                events,
            } => {
                self.metrics
                    .prompt_tokens
                    .fetch_add(prompt.len() as u64, Relaxed);
                let sampler = Sampler::new(params.sampling.clone());
                let stream = TextStream::new(params.stop_strings.clone());
                let salt = match &adapter {
                    Some((name, _)) => chain_hash(
                        self.config.cache_salt,
                        &name.bytes().map(u32::from).collect::<Vec<_>>(),
                    ),
                    None => self.config.cache_salt,
                };
                self.waiting.push_back(Seq {
                    prompt_len: prompt.len(),
                    tokens: prompt,
                    computed: 0,
                    blocks: Vec::new(),
                    hashes: Vec::new(),
                    salt,
                    adapter: adapter.map(|(_, a)| a),
                    kind: SeqKind::Generate(Box::new(Generation {
                        params,
                        penalty_window,
                        sampler,
                        stream,
                        generated: Vec::new(),
                        events,
                        arrived: Instant::now(),
                        first_token: false,
                        cached_tokens: 0,
                        finish: None,
                        stopped_by_string: false,
                    })),
                });
            }
            Job::Embed { inputs, events } => {
                let group = self.next_group;
                self.next_group += 1;
                let tokens = inputs.iter().map(Vec::len).sum();
                self.metrics.prompt_tokens.fetch_add(tokens as u64, Relaxed);
                self.groups.insert(
                    group,
                    EmbedGroup {
                        events,
                        results: vec![None; inputs.len()],
                        tokens,
                    },
                );
                let c = self.model.config().hidden_size;
                for (index, input) in inputs.into_iter().enumerate() {
                    self.waiting.push_back(Seq {
                        prompt_len: input.len(),
                        tokens: input,
                        computed: 0,
                        blocks: Vec::new(),
                        hashes: Vec::new(),
                        salt: self.config.cache_salt,
                        adapter: None,
                        kind: SeqKind::Embed {
                            group,
                            index,
                            sum: vec![0.0; c],
                        },
                    });
                }
                // One queue slot per request, however many inputs.
                self.queued.fetch_sub(1, Relaxed);
            }
        }
    }

    fn is_cancelled(&self, seq: &Seq) -> bool {
        match &seq.kind {
            SeqKind::Generate(g) => g.events.is_closed(),
            SeqKind::Embed { group, .. } => {
                self.groups.get(group).is_none_or(|g| g.events.is_closed())
            }
        }
    }

    fn drop_cancelled(&mut self) {
        let mut cancelled_groups = Vec::new();
        for list in [0, 1] {
            let seqs: Vec<Seq> = if list == 0 {
                std::mem::take(&mut self.running)
            } else {
                std::mem::take(&mut self.waiting).into()
            };
            let mut keep = Vec::with_capacity(seqs.len());
            for seq in seqs {
                if self.is_cancelled(&seq) {
                    match &seq.kind {
                        SeqKind::Generate(_) => {
                            self.metrics.cancelled.fetch_add(1, Relaxed);
                            if list == 1 {
                                self.queued.fetch_sub(1, Relaxed);
                            }
                        }
                        SeqKind::Embed { group, .. } => cancelled_groups.push(*group),
                    }
                    self.blocks.release(&seq.blocks);
                } else {
                    keep.push(seq);
                }
            }
            if list == 0 {
                self.running = keep;
            } else {
                self.waiting = keep.into();
            }
        }
        for g in cancelled_groups {
            if self.groups.remove(&g).is_some() {
                self.metrics.cancelled.fetch_add(1, Relaxed);
            }
        }
    }

    /// Moves waiting sequences into the running batch, oldest first, while
    /// there is room for their prompts in the cache (keeping one block per
    /// running sequence in reserve for its next decode step).
    fn admit(&mut self) {
        while self.running.len() < self.config.max_batch_seqs {
            let Some(mut seq) = self.waiting.pop_front() else {
                break;
            };
            if let SeqKind::Generate(g) = &mut seq.kind {
                // Reuse cached full blocks of the prompt, but always leave at
                // least the last token to compute (it gives the logits).
                let hashes = prefix_hashes(
                    &seq.tokens[..seq.tokens.len() - 1],
                    self.blocks.block_size(),
                    seq.salt,
                );
                let shared = self.blocks.match_prefix(&hashes);
                seq.computed = shared.len() * self.blocks.block_size();
                seq.hashes = hashes[..shared.len()].to_vec();
                seq.blocks = shared;
                if g.generated.is_empty() {
                    g.cached_tokens = seq.computed;
                }
            }
            let need = self
                .blocks
                .blocks_for(seq.tokens.len() + 1)
                .saturating_sub(seq.blocks.len());
            if need + self.running.len() > self.blocks.available() {
                // Not now: give back what it matched and wait.
                self.blocks.release(&seq.blocks);
                seq.blocks.clear();
                seq.hashes.clear();
                seq.computed = 0;
                self.waiting.push_front(seq);
                break;
            }
            if let SeqKind::Generate(g) = &seq.kind {
                if g.generated.is_empty() {
                    self.metrics
                        .prefix_hit_tokens
                        .fetch_add(seq.computed as u64, Relaxed);
                }
                self.queued.fetch_sub(1, Relaxed);
            }
            self.running.push(seq);
        }
    }

    /// Gives `seq` blocks for `positions` positions; false if the cache
    /// has none left.
    fn grow(&mut self, seq: usize, positions: usize) -> bool {
        while self.running[seq].blocks.len() * self.blocks.block_size() < positions {
            match self.blocks.allocate() {
                Some(b) => self.running[seq].blocks.push(b),
                None => return false,
            }
        }
        true
    }

    /// Sends the most recently admitted sequence other than `keep` back to
    /// the queue, freeing its blocks. False if there is none.
    fn preempt(&mut self, keep: usize) -> bool {
        let Some(victim) = (0..self.running.len()).rev().find(|&i| i != keep) else {
            return false;
        };
        let mut seq = self.running.remove(victim);
        self.blocks.release(&seq.blocks);
        seq.blocks.clear();
        seq.hashes.clear();
        seq.computed = 0;
        if let SeqKind::Generate(_) = seq.kind {
            self.queued.fetch_add(1, Relaxed);
        }
        self.metrics.preempted.fetch_add(1, Relaxed);
        self.waiting.push_front(seq);
        true
    }

    /// Decides who runs how many tokens this step.
    fn plan(&mut self) -> Vec<Planned> {
        let mut budget = self.config.max_batch_tokens;
        let mut plan = Vec::new();
        // Decoding sequences first (one token each), then prompt chunks.
        for decoding in [true, false] {
            let mut i = 0;
            while i < self.running.len() {
                let s = &self.running[i];
                let remaining = s.tokens.len() - s.computed;
                let is_decode = s.computed >= s.prompt_len;
                if is_decode != decoding || budget == 0 || remaining == 0 {
                    i += 1;
                    continue;
                }
                let mut len = remaining.min(budget);
                let start = s.computed;
                if !self.grow(i, start + len) {
                    // Take what fits in the blocks it has; preempt others to
                    // make room for at least one token.
                    let have = self.running[i].blocks.len() * self.blocks.block_size() - start;
                    if have > 0 {
                        len = have;
                    } else {
                        let mut grown = false;
                        while self.preempt(i) {
                            // Preempting removes an entry: fix up indices.
                            plan.retain(|p: &Planned| p.seq < self.running.len());
                            i = i.min(self.running.len() - 1);
                            if self.grow(i, start + 1) {
                                grown = true;
                                break;
                            }
                        }
                        if !grown {
                            let seq = self.running.remove(i);
                            self.fail(
                                seq,
                                "the KV cache is too small for this request (raise --kv-cache-mb)",
                            );
                            continue;
                        }
                        len = 1;
                    }
                }
                let s = &self.running[i];
                let output = match s.kind {
                    SeqKind::Embed { .. } => SeqOutput::HiddenSum,
                    SeqKind::Generate(_) if start + len == s.tokens.len() => SeqOutput::LastLogits,
                    SeqKind::Generate(_) => SeqOutput::None,
                };
                budget -= len;
                plan.push(Planned {
                    seq: i,
                    len,
                    output,
                });
                i += 1;
            }
        }
        plan
    }

    fn step(&mut self) -> Result<()> {
        let plan = self.plan();
        if plan.is_empty() {
            return Ok(());
        }
        {
            let batch: Vec<BatchSeq> = plan
                .iter()
                .map(|p| {
                    let s = &self.running[p.seq];
                    BatchSeq {
                        tokens: &s.tokens[s.computed..s.computed + p.len],
                        pos0: s.computed,
                        blocks: &s.blocks,
                        output: p.output,
                        adapter: s.adapter.as_deref(),
                    }
                })
                .collect();
            self.model
                .forward_batch(&mut self.act, &mut self.cache, &batch, &mut self.out)?;
        }
        self.metrics.steps.fetch_add(1, Relaxed);
        self.metrics.batch_seqs.observe(plan.len() as f64);
        self.metrics
            .max_batch_seqs
            .fetch_max(plan.len() as u64, Relaxed);

        let vocab = self.model.config().vocab_size;
        let c = self.model.config().hidden_size;
        let (mut logit_row, mut hidden_row) = (0, 0);
        let mut finished = Vec::new();
        let mut logits = std::mem::take(&mut self.out.logits);
        for p in &plan {
            let bs = self.blocks.block_size();
            let s = &mut self.running[p.seq];
            let salt = s.salt;
            s.computed += p.len;
            // Register newly full blocks for prefix reuse (generation only:
            // embeddings need every row computed, so never match).
            if let SeqKind::Generate(_) = s.kind {
                while (s.hashes.len() + 1) * bs <= s.computed {
                    let i = s.hashes.len();
                    let prev = if i == 0 { salt } else { s.hashes[i - 1] };
                    let h = chain_hash(prev, &s.tokens[i * bs..(i + 1) * bs]);
                    s.hashes.push(h);
                    self.blocks.register(s.blocks[i], h);
                }
            }
            match p.output {
                SeqOutput::None => {}
                SeqOutput::HiddenSum => {
                    if let SeqKind::Embed { sum, .. } = &mut s.kind {
                        let row = &self.out.hidden_sums[hidden_row * c..(hidden_row + 1) * c];
                        sum.iter_mut().zip(row).for_each(|(a, b)| *a += b);
                    }
                    hidden_row += 1;
                    if s.computed == s.tokens.len() {
                        finished.push(p.seq);
                    }
                }
                SeqOutput::LastLogits => {
                    let row = &mut logits[logit_row * vocab..(logit_row + 1) * vocab];
                    logit_row += 1;
                    if self.sample(p.seq, row) {
                        finished.push(p.seq);
                    }
                }
            }
        }
        self.out.logits = logits;
        // Remove finished sequences, highest index first.
        finished.sort_unstable();
        for i in finished.into_iter().rev() {
            let seq = self.running.remove(i);
            self.finish(seq);
        }
        Ok(())
    }

    /// Samples the next token of running sequence `i`; true when it is done.
    fn sample(&mut self, i: usize, logits: &mut [f32]) -> bool {
        let context_len = self.config.context_len;
        let s = &mut self.running[i];
        let SeqKind::Generate(g) = &mut s.kind else {
            return true;
        };
        let context = match g.penalty_window {
            Some(n) => &s.tokens[s.tokens.len().saturating_sub(n)..],
            None => &s.tokens[..],
        };
        let next = g.sampler.sample(logits, context);
        if !g.first_token {
            g.first_token = true;
            self.metrics.ttft.observe(g.arrived.elapsed().as_secs_f64());
        }
        if g.params.eos_token_ids.contains(&next) {
            g.finish = Some(FinishReason::Stop);
            return true;
        }
        g.generated.push(next);
        s.tokens.push(next);
        self.metrics.generated_tokens.fetch_add(1, Relaxed);
        self.rate.1 += 1;
        let text = match self.tokenizer.decode(&g.generated, true) {
            Ok(t) => t,
            Err(e) => {
                let _ = g
                    .events
                    .send(Event::Error(format!("cannot decode the output: {e:#}")));
                g.finish = Some(FinishReason::Stop);
                return true;
            }
        };
        match g.stream.update(text) {
            StreamStep::Text(t) => {
                if !t.is_empty() {
                    let _ = g.events.send(Event::Text(t.to_string()));
                }
            }
            StreamStep::Stopped(t) => {
                if !t.is_empty() {
                    let _ = g.events.send(Event::Text(t.to_string()));
                }
                g.stopped_by_string = true;
                g.finish = Some(FinishReason::Stop);
                return true;
            }
        }
        if g.generated.len() >= g.params.max_new_tokens || s.tokens.len() >= context_len {
            g.finish = Some(FinishReason::Length);
            return true;
        }
        false
    }

    fn finish(&mut self, seq: Seq) {
        self.blocks.release(&seq.blocks);
        match seq.kind {
            SeqKind::Generate(mut g) => {
                let reason = g.finish.unwrap_or(FinishReason::Stop);
                if !g.stopped_by_string {
                    let rest = g.stream.finish();
                    if !rest.is_empty() {
                        let _ = g.events.send(Event::Text(rest.to_string()));
                    }
                }
                self.metrics
                    .latency
                    .observe(g.arrived.elapsed().as_secs_f64());
                let _ = g.events.send(Event::Done(Finish {
                    reason,
                    prompt_tokens: seq.prompt_len,
                    completion_tokens: g.generated.len(),
                    cached_tokens: g.cached_tokens,
                }));
            }
            SeqKind::Embed {
                group,
                index,
                mut sum,
            } => {
                let Some(gr) = self.groups.get_mut(&group) else {
                    return;
                };
                // Mean over tokens, then L2-normalised.
                let n = seq.tokens.len().max(1) as f32;
                sum.iter_mut().for_each(|x| *x /= n);
                let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    sum.iter_mut().for_each(|x| *x /= norm);
                }
                gr.results[index] = Some(sum);
                if gr.results.iter().all(Option::is_some) {
                    let gr = self.groups.remove(&group).expect("present");
                    let vectors = gr
                        .results
                        .into_iter()
                        .map(|r| r.expect("all present"))
                        .collect();
                    let _ = gr.events.send(Event::Embeddings(vectors, gr.tokens));
                }
            }
        }
    }

    fn fail(&mut self, seq: Seq, message: &str) {
        self.blocks.release(&seq.blocks);
        match seq.kind {
            SeqKind::Generate(g) => {
                let _ = g.events.send(Event::Error(message.to_string()));
            }
            SeqKind::Embed { group, .. } => {
                if let Some(gr) = self.groups.remove(&group) {
                    let _ = gr.events.send(Event::Error(message.to_string()));
                }
            }
        }
    }

    fn update_gauges(&mut self) {
        let m = &self.metrics;
        m.running.store(self.running.len() as u64, Relaxed);
        m.queue_depth.store(self.waiting.len() as u64, Relaxed);
        m.kv_blocks_used.store(self.blocks.in_use() as u64, Relaxed);
        m.kv_blocks_cached
            .store(self.blocks.cached_idle() as u64, Relaxed);
        let elapsed = self.rate.0.elapsed().as_secs_f64();
        if elapsed >= 1.0 {
            m.set_tokens_per_second(self.rate.1 as f64 / elapsed);
            self.rate = (Instant::now(), 0);
        }
    }
}
