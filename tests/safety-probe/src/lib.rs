//! An HTTP component that calls whatever provides `therapy:safety/screen`
//! and `therapy:safety/output-filter` (`[component.safety-probe.dependencies]`):
//! `GET /screen?<text>` answers `risk=<bool> severity=<s> escalate=<bool>
//! rules=<ids> resources=<n>`; `GET /filter?<text>` answers
//! `action=<a> findings=<ids> text=<text>`. Text is URL-encoded.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

wit_bindgen::generate!({ path: "../../wit/safety.wit", world: "safety-user", generate_all });

use therapy::safety::output_filter;
use therapy::safety::screen;

fn decode(q: &str) -> String {
    let bytes = q.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let text = decode(req.uri().query().unwrap_or(""));
    match req.uri().path() {
        "/screen" => {
            let a = screen::classify(&text);
            let resources = match screen::build_crisis_payload(&a, "") {
                Ok(p) => p.resources.len().to_string(),
                Err(e) => format!("error:{e}"),
            };
            let rules: Vec<String> = a.hits.iter().map(|h| h.rule_id.clone()).collect();
            format!("risk={} severity={:?} escalate={} rules={} resources={resources}", a.risk, a.severity, a.escalate, rules.join(","))
        }
        "/filter" => {
            let v = output_filter::check(&text, &output_filter::FilterConfig { blocklist: vec!["acme pharma".into()] });
            let ids: Vec<String> = v.findings.iter().map(|f| f.rule_id.clone()).collect();
            format!("action={:?} findings={} text={}", v.action, ids.join(","), v.text)
        }
        _ => "unknown path".to_string(),
    }
}
