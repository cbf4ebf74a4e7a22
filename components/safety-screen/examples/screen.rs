//! Screens each argument (or each stdin line) and prints the normalised
//! clauses and the assessment: `cargo run -p safety-screen --example screen -- "text"`.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let lines: Vec<String> = if args.is_empty() {
        std::io::stdin().lines().map_while(Result::ok).collect()
    } else {
        args
    };
    for text in lines {
        let n = safety_screen::normalise::normalise(&text);
        let a = safety_screen::classify(&text);
        println!("{text}\n  clauses: {:?}\n  {:?} risk={} hits={:?}", n.clauses, a.severity, a.risk,
            a.hits.iter().map(|h| format!("{}:{:?}{}", h.rule_id, h.severity, if h.discounted { "(discounted)" } else { "" })).collect::<Vec<_>>());
    }
}
