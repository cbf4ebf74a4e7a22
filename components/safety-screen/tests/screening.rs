//! The labelled screening set (`screening_set.jsonl`): recall and false
//! positive rate of the default rule set, printed and asserted
//! (recall >= 0.98, false positives <= 0.05), plus a cost benchmark
//! (`cargo test -p safety-screen --release -- --ignored screen_cost --nocapture`).

use safety_screen::{Category, classify};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Deserialize)]
struct Labelled {
    id: String,
    text: String,
    risk: bool,
    /// A risk category, or "ordinary" / "hard-negative" for no-risk messages.
    category: String,
}

fn load(name: &str) -> Vec<Labelled> {
    let path = format!("{}/tests/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}")))
        .collect()
}

struct Metrics {
    recall: f64,
    fpr: f64,
}

fn evaluate(name: &str) -> Metrics {
    let set = load(name);
    let (mut tp, mut fn_, mut fp, mut tn) = (0, 0, 0, 0);
    let mut per_cat: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new(); // flagged, right category, total
    let mut missed = Vec::new();
    let mut false_alarms = Vec::new();
    for m in &set {
        let a = classify(&m.text);
        let e = per_cat.entry(m.category.clone()).or_default();
        e.2 += 1;
        if a.risk {
            e.0 += 1;
        }
        if let Some(c) = Category::parse(&m.category)
            && a.categories.contains(&c)
        {
            e.1 += 1;
        }
        match (m.risk, a.risk) {
            (true, true) => tp += 1,
            (true, false) => {
                fn_ += 1;
                missed.push(format!("{} [{}] {:?}", m.id, m.category, a.severity));
            }
            (false, true) => {
                fp += 1;
                false_alarms.push(format!("{} [{}] {:?} {:?}", m.id, m.category, a.severity, a.rule_ids()));
            }
            (false, false) => tn += 1,
        }
    }
    let recall = tp as f64 / (tp + fn_) as f64;
    let fpr = fp as f64 / (fp + tn) as f64;
    println!("== {name}: {} messages ({} risk, {} no risk)", set.len(), tp + fn_, fp + tn);
    println!("recall {:.4} ({tp}/{}), false-positive rate {:.4} ({fp}/{})", recall, tp + fn_, fpr, fp + tn);
    println!("{:<20} {:>7} {:>9} {:>14}", "category", "total", "flagged", "right category");
    for (cat, (flagged, right, total)) in &per_cat {
        let right = if Category::parse(cat).is_some() { format!("{right}") } else { "-".into() };
        println!("{cat:<20} {total:>7} {flagged:>9} {right:>14}");
    }
    println!("missed (false negatives): {missed:?}");
    println!("false alarms (false positives): {false_alarms:?}");
    Metrics { recall, fpr }
}

#[test]
fn screening_set_metrics() {
    let m = evaluate("screening_set.jsonl");
    assert!(m.recall >= 0.98, "recall {:.4} < 0.98", m.recall);
    assert!(m.fpr <= 0.05, "false-positive rate {:.4} > 0.05", m.fpr);
}

#[test]
fn screening_set_is_big_and_balanced_enough() {
    let set = load("screening_set.jsonl");
    assert!(set.len() >= 220);
    let risk = set.iter().filter(|m| m.risk).count();
    assert!(risk >= 100 && set.len() - risk >= 100);
    assert!(set.iter().filter(|m| m.category == "hard-negative").count() >= 40);
    for c in Category::ALL {
        assert!(set.iter().filter(|m| m.category == c.as_str()).count() >= 15, "{c:?}");
    }
    let mut ids: Vec<&str> = set.iter().map(|m| m.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), set.len(), "duplicate ids");
}

/// Cost of screening one message, natively (µs per message over the set).
#[test]
#[ignore]
fn screen_cost() {
    let set = load("screening_set.jsonl");
    safety_screen::screen::warm_up();
    let rounds = 50;
    let start = Instant::now();
    let mut flagged = 0;
    for _ in 0..rounds {
        for m in &set {
            flagged += classify(&m.text).risk as usize;
        }
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / (rounds * set.len()) as f64;
    let start = Instant::now();
    for _ in 0..rounds {
        for m in &set {
            std::hint::black_box(safety_screen::normalise::normalise(&m.text));
        }
    }
    let norm = start.elapsed().as_secs_f64() * 1e6 / (rounds * set.len()) as f64;
    println!("of which normalisation: {norm:.1} µs per message");
    let cold = Instant::now();
    let _ = classify("warm rules, cold message");
    println!("screen: {per:.1} µs per message (mean over {} messages x {rounds}; {flagged} flagged); one more: {:?}", set.len(), cold.elapsed());
    let text = "That sounds really hard. You have depression. Take 50mg of sertraline. Let's look at your week.";
    let cfg = safety_screen::FilterConfig::from_lines("acme pharma\nmiracle cure");
    let start = Instant::now();
    for _ in 0..2000 {
        std::hint::black_box(safety_screen::check(text, &cfg));
    }
    println!("output filter: {:.1} µs per 4-sentence reply", start.elapsed().as_secs_f64() * 1e6 / 2000.0);
    let start = Instant::now();
    let n = 20;
    for _ in 0..n {
        // the patterns alone, as the screen compiles them (sets shared)
        let mut compiler = safety_screen::pattern::Compiler::new(safety_screen::rules::SETS);
        let compiled: Vec<safety_screen::pattern::Pattern> = safety_screen::rules::RULES
            .iter()
            .flat_map(|r| r.patterns.iter().chain(r.unless).chain(r.with))
            .map(|p| compiler.compile(p))
            .collect();
        std::hint::black_box(compiled);
    }
    println!("rule-set patterns compiled: {:.0} µs", start.elapsed().as_secs_f64() * 1e6 / n as f64);
    let whole: f64 = (0..n).map(|_| safety_screen::screen::compile_cost().as_secs_f64()).sum::<f64>() / n as f64;
    println!("whole rule set compiled (patterns, anchor index, markers: a fresh instance's first call): {:.0} µs", whole * 1e6);
}

/// The later sets were each written after the rules of their time,
/// committed, run once (first-run numbers in the commit messages and the
/// README), and only then used to improve the rules, so their current
/// numbers are optimistic. The held-out set keeps a loose floor.
#[test]
fn holdout_set_metrics() {
    let m = evaluate("holdout_set.jsonl");
    assert!(m.recall >= 0.80, "held-out recall {:.4} < 0.80", m.recall);
    assert!(m.fpr <= 0.15, "held-out false-positive rate {:.4} > 0.15", m.fpr);
}

/// `fresh_set.jsonl`: first run recall 0.4375, FPR 0.0357 (see README). Printed only.
#[test]
fn fresh_set_metrics() {
    let m = evaluate("fresh_set.jsonl");
    assert!(m.recall.is_finite() && m.fpr.is_finite());
}

/// `final_set.jsonl`: first run recall 0.5556, FPR 0.0667 (see README). Printed only.
#[test]
fn final_set_metrics() {
    let m = evaluate("final_set.jsonl");
    assert!(m.recall.is_finite() && m.fpr.is_finite());
}

/// `blind_set.jsonl`: first run recall 0.5278, FPR 0.0333 (see README). Printed only.
#[test]
fn blind_set_metrics() {
    let m = evaluate("blind_set.jsonl");
    assert!(m.recall.is_finite() && m.fpr.is_finite());
}
