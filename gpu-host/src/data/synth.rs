//! A synthetic multi-domain therapy-dialogue corpus for tests and the demo
//! model. Every record carries `"synthetic": true` and its system prompt
//! says so: this text is generated from templates, not written by or about
//! real people, and is not clinical advice.

use crate::rng::Rng;
use crate::train::model::DOMAINS;
use anyhow::{Context, Result};
use serde_json::json;
use std::io::Write;
use std::path::Path;

struct DomainText {
    system: &'static [&'static str],
    user: &'static [&'static str],
    assistant: &'static [&'static str],
    follow_up: &'static [&'static str],
    closing: &'static [&'static str],
}

const SUBJECTS: &[&str] = &[
    "work",
    "my sister",
    "my partner",
    "school",
    "my manager",
    "my mother",
    "my friends",
    "the new job",
    "my team",
    "my neighbour",
];
const FEELINGS: &[&str] = &[
    "anxious",
    "tired",
    "overwhelmed",
    "low",
    "restless",
    "tense",
    "numb",
    "irritable",
    "hopeless",
    "on edge",
];
const TIMES: &[&str] = &[
    "this week",
    "for a month",
    "since the spring",
    "every morning",
    "at night",
    "lately",
    "most days",
    "after meetings",
];

const PSYCHOLOGY: DomainText = DomainText {
    system: &[
        "[synthetic] You are a psychology educator who explains cognitive and behavioural concepts clearly.",
        "[synthetic] Explain the psychology behind thoughts, emotions and behaviour.",
    ],
    user: &[
        "Why do I keep thinking about {s} {t}?",
        "What is cognitive dissonance, and does it explain how I feel about {s}?",
        "Is it normal to feel {f} when I think about {s}?",
        "How does attachment theory relate to {s}?",
        "Why does my mind replay conversations with {s} {t}?",
    ],
    assistant: &[
        "In cognitive psychology, repeated thoughts about {s} are often called rumination: the mind keeps returning to an unresolved problem. Noticing the loop is the first step.",
        "Cognitive dissonance is the tension between two beliefs that conflict. Feeling {f} about {s} can come from valuing something that also causes you strain.",
        "Attachment theory suggests early bonds shape how we expect others to respond. Feeling {f} with {s} may echo an anxious attachment pattern.",
        "Behavioural research shows that reinforcement shapes habits: when worry about {s} briefly relieves uncertainty, the worry itself is reinforced.",
    ],
    follow_up: &[
        "So is the rumination a habit I learned?",
        "What does the research say about changing that pattern?",
        "Does that mean my beliefs are wrong?",
    ],
    closing: &[
        "Habits of thought are learned, and research on cognitive restructuring shows they can be relearned with practice and curiosity.",
        "Psychologists describe this as schema change: small experiments that test a belief gradually update it.",
    ],
};

const MENTAL_HEALTH: DomainText = DomainText {
    system: &[
        "[synthetic] You are a supportive mental health companion; encourage professional care when needed.",
        "[synthetic] Offer warm, practical support for wellbeing and coping.",
    ],
    user: &[
        "I have been feeling {f} {t} and I can't sleep.",
        "Everything with {s} makes me {f}. How do I cope?",
        "I feel {f} {t}. Is that depression?",
        "My panic gets worse around {s}. What can I do right now?",
        "I haven't been eating well and I feel {f} {t}.",
    ],
    assistant: &[
        "That sounds really hard. Feeling {f} {t} and losing sleep deserves care. A steady bedtime routine and a short breathing exercise can help, and a doctor or counsellor can support you too.",
        "I'm glad you reached out. When {s} leaves you {f}, try grounding: name five things you can see, four you can touch, and breathe slowly.",
        "Feeling {f} {t} can be a sign of depression, but only a professional can assess it. Would you consider booking an appointment with your GP?",
        "Panic is frightening but it passes. Slow your breathing, count to four on the inhale and six on the exhale, and remind yourself you are safe.",
    ],
    follow_up: &[
        "I tried breathing but it still feels heavy.",
        "I'm scared to talk to a doctor.",
        "What if it doesn't get better?",
    ],
    closing: &[
        "It's okay that it feels heavy. Be gentle with yourself, keep small routines, and if you ever feel unsafe, please contact a crisis line or emergency services.",
        "Many people feel nervous before that first appointment. You can write down what you want to say, and bring someone you trust.",
    ],
};

const BIAS_DETECTION: DomainText = DomainText {
    system: &[
        "[synthetic] You review statements for bias, stereotypes and unfair assumptions, and suggest neutral wording.",
        "[synthetic] Identify biased language and explain why it is biased.",
    ],
    user: &[
        "Is this biased: \"people from {s} are always lazy\"?",
        "My report says women on {s} are too emotional to lead. Is that fair?",
        "Does the phrase \"he is surprisingly articulate\" carry bias?",
        "Check this for stereotypes: \"older staff at {s} can't learn new tools\".",
        "Is it biased to assume {s} is {f} because of their age?",
    ],
    assistant: &[
        "Yes. The statement generalises a whole group from a stereotype. A neutral version would describe specific behaviour of specific people instead of assigning a trait to a group.",
        "That wording reflects a gender stereotype. Leadership ability varies between individuals; the report should cite observed performance, not group generalisations.",
        "\"Surprisingly articulate\" implies a lowered expectation, which often signals racial or class bias. Simply saying \"articulate\" or describing the argument avoids it.",
        "This is an age stereotype. Evidence should be about individual training outcomes. A fairer phrasing: \"some staff at {s} asked for more training on the new tools\".",
    ],
    follow_up: &[
        "How would you rewrite it neutrally?",
        "Is it still bias if it is sometimes true?",
        "What kind of bias is this called?",
    ],
    closing: &[
        "A neutral rewrite focuses on observable facts about individuals and avoids attributing traits to a group. Generalisations remain biased even when some cases fit.",
        "This is stereotyping, a form of implicit bias; confirmation bias then makes the fitting examples more memorable than the exceptions.",
    ],
};

const GENERAL: DomainText = DomainText {
    system: &[
        "[synthetic] You are a kind, reflective therapeutic listener.",
        "[synthetic] Listen carefully, reflect feelings, and ask open questions.",
    ],
    user: &[
        "I just need to talk about {s}.",
        "Today was a lot. {s} was difficult again.",
        "I don't really know where to start with {s}.",
        "Can I tell you about my week with {s}?",
        "I keep feeling {f} and I don't know why.",
    ],
    assistant: &[
        "Of course, I'm here to listen. What has been on your mind about {s}?",
        "It sounds like today took a lot out of you. What happened with {s} that felt hardest?",
        "That's okay, we can start anywhere. What is one moment with {s} that stayed with you?",
        "I'd like to hear about it. How have you been feeling through the week?",
    ],
    follow_up: &[
        "I guess I feel unheard.",
        "It's hard to say it out loud.",
        "Thank you for listening.",
    ],
    closing: &[
        "Feeling unheard is painful. Thank you for sharing it with me. What would help you feel heard right now?",
        "You did say it, and that takes courage. Take your time; I'm here.",
    ],
};

const TEXTS: [&DomainText; 4] = [&PSYCHOLOGY, &MENTAL_HEALTH, &BIAS_DETECTION, &GENERAL];

fn pick<'a>(rng: &mut Rng, list: &[&'a str]) -> &'a str {
    list[rng.below(list.len() as u64) as usize]
}

fn fill(rng: &mut Rng, list: &[&str], s: &str, f: &str) -> String {
    let template = pick(rng, list);
    template
        .replace("{s}", s)
        .replace("{f}", f)
        .replace("{t}", pick(rng, TIMES))
}

/// `n` synthetic conversations as JSON values, deterministic in `seed`,
/// cycling through the domains.
pub fn synth_conversations(n: usize, seed: u64) -> Vec<serde_json::Value> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let d = i % DOMAINS.len();
            let t = TEXTS[d];
            let (s, f) = (pick(&mut rng, SUBJECTS), pick(&mut rng, FEELINGS));
            let mut messages = vec![json!({"role": "system", "content": pick(&mut rng, t.system)})];
            messages.push(json!({"role": "user", "content": fill(&mut rng, t.user, s, f)}));
            messages
                .push(json!({"role": "assistant", "content": fill(&mut rng, t.assistant, s, f)}));
            if rng.below(2) == 0 {
                messages.push(json!({"role": "user", "content": pick(&mut rng, t.follow_up)}));
                messages
                    .push(json!({"role": "assistant", "content": fill(&mut rng, t.closing, s, f)}));
            }
            json!({"messages": messages, "domain": DOMAINS[d], "synthetic": true})
        })
        .collect()
}

/// Writes `n` synthetic conversations to `out` as JSONL.
pub fn write_synthetic(out: &Path, n: usize, seed: u64) -> Result<()> {
    if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
    );
    for rec in synth_conversations(n, seed) {
        writeln!(w, "{rec}").with_context(|| format!("cannot write {}", out.display()))?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::records::parse_record;

    #[test]
    fn synthetic_records_are_valid_varied_and_deterministic() {
        let a = synth_conversations(200, 3);
        assert_eq!(a, synth_conversations(200, 3));
        let texts: std::collections::HashSet<String> = a.iter().map(|r| r.to_string()).collect();
        assert!(texts.len() > 150, "only {} distinct records", texts.len());
        for r in &a {
            let c = parse_record(&r.to_string()).unwrap();
            assert!(c.domain.is_some());
            assert!(c.messages[0].content.starts_with("[synthetic]"));
        }
    }
}
