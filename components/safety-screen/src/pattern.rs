//! The rules' pattern language: a sequence of word slots matched against
//! consecutive normalised tokens of one clause. Small on purpose, so that a
//! clinician can read a rule.
//!
//! | syntax          | matches                                              |
//! | --------------- | ---------------------------------------------------- |
//! | `kill`          | the word                                             |
//! | `kill*`         | any word starting with it (`killing`, `killed`)      |
//! | `a\|b\|c`       | one of the alternatives                              |
//! | `be_alive`      | a multi-word alternative (`be alive`)                |
//! | `[my\|the]`     | optional slot                                        |
//! | `..`            | skip 0 to 3 words                                    |
//! | `...`           | skip 0 to 6 words                                    |
//! | `@person`       | a named word list ([`SETS`](crate::rules::SETS))     |
//! | `#many`         | a number of 8 or more, in digits or words            |

use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone)]
enum Word {
    Exact(String),
    Prefix(String),
    Many,
}

/// The alternatives of one slot, split for speed: one-word exact
/// alternatives go in a hash set (a slot may list a hundred words).
#[derive(Debug, Clone, Default)]
struct Alternatives {
    singles: HashSet<String>,
    prefixes: Vec<String>,
    many: bool,
    multi: Vec<Vec<Word>>,
    /// Indices into `multi` by exact first word; the rest start with a prefix.
    multi_by_first: HashMap<String, Vec<usize>>,
    multi_other: Vec<usize>,
}

#[derive(Debug, Clone)]
enum Slot {
    One(Alternatives),
    Optional(Alternatives),
    Gap(usize),
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    slots: Vec<Slot>,
    /// The mandatory slot with the fewest alternatives: a clause with none
    /// of its (first) words cannot match, so the pattern is skipped cheaply.
    anchor: Option<usize>,
}

/// Where a pattern matched: token indices `[start, end)` in the clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

const MANY_WORDS: &[&str] = &[
    "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen",
    "sixteen", "seventeen", "eighteen", "nineteen", "twenty", "thirty", "forty",
    "fifty", "sixty", "seventy", "eighty", "ninety", "hundred", "hundreds",
    "dozen", "dozens", "whole", "entire",
];

impl Pattern {
    /// Compiles `source`; `sets` resolves `@name`. Panics on a malformed
    /// pattern: the rule table is static and a unit test compiles it all.
    pub fn compile(source: &str, sets: &[(&str, &str)]) -> Pattern {
        let mut slots = Vec::new();
        for item in source.split_whitespace() {
            let slot = match item {
                ".." => Slot::Gap(3),
                "..." => Slot::Gap(6),
                _ if item.starts_with('[') => {
                    let inner = item
                        .strip_prefix('[')
                        .and_then(|s| s.strip_suffix(']'))
                        .unwrap_or_else(|| panic!("unclosed optional slot in pattern `{source}`"));
                    Slot::Optional(alternatives(inner, sets, source))
                }
                _ => Slot::One(alternatives(item, sets, source)),
            };
            slots.push(slot);
        }
        assert!(!slots.is_empty(), "empty pattern");
        let anchor = slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::One(a) if !a.many => Some((i, a.singles.len() + a.prefixes.len() + a.multi.len())),
                _ => None,
            })
            .min_by_key(|&(_, n)| n)
            .map(|(i, _)| i);
        Pattern { slots, anchor }
    }

    /// Whether some token could start an alternative of the anchor slot.
    fn anchored(&self, tokens: &[String]) -> bool {
        let Some(Slot::One(a)) = self.anchor.map(|i| &self.slots[i]) else {
            return true;
        };
        tokens.iter().any(|t| {
            a.singles.contains(t.as_str())
                || a.prefixes.iter().any(|p| t.starts_with(p.as_str()))
                || a.multi.iter().any(|m| m.first().is_some_and(|w| word_matches(w, t)))
        })
    }

    /// The first (leftmost) match in `tokens`.
    pub fn find(&self, tokens: &[String]) -> Option<Span> {
        self.find_all(tokens).next()
    }

    /// One match per start position, left to right.
    pub fn find_all<'a>(&'a self, tokens: &'a [String]) -> impl Iterator<Item = Span> + 'a {
        let possible = self.anchored(tokens);
        (0..if possible { tokens.len() } else { 0 }).filter_map(move |start| {
            match_slots(&self.slots, tokens, start).map(|end| Span { start, end })
        })
    }
}

fn alternatives(item: &str, sets: &[(&str, &str)], source: &str) -> Alternatives {
    let mut alts = Alternatives::default();
    add_alternatives(&mut alts, item, sets, source);
    for (i, alt) in alts.multi.iter().enumerate() {
        match &alt[0] {
            Word::Exact(w) => alts.multi_by_first.entry(w.clone()).or_default().push(i),
            _ => alts.multi_other.push(i),
        }
    }
    alts
}

fn add_alternatives(alts: &mut Alternatives, item: &str, sets: &[(&str, &str)], source: &str) {
    for alt in item.split('|') {
        if let Some(name) = alt.strip_prefix('@') {
            let (_, list) = sets
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("unknown set @{name} in pattern `{source}`"));
            add_alternatives(alts, list, sets, source);
            continue;
        }
        assert!(!alt.is_empty(), "empty alternative in pattern `{source}`");
        let words: Vec<Word> = alt
            .split('_')
            .map(|w| {
                if w == "#many" {
                    Word::Many
                } else if let Some(p) = w.strip_suffix('*') {
                    Word::Prefix(p.to_string())
                } else {
                    Word::Exact(w.to_string())
                }
            })
            .collect();
        match <[Word; 1]>::try_from(words) {
            Ok([Word::Exact(w)]) => {
                alts.singles.insert(w);
            }
            Ok([Word::Prefix(p)]) => alts.prefixes.push(p),
            Ok([Word::Many]) => alts.many = true,
            Err(words) => alts.multi.push(words),
        }
    }
}

fn is_many(token: &str) -> bool {
    token.parse::<u32>().is_ok_and(|n| n >= 8) || MANY_WORDS.contains(&token)
}

fn word_matches(word: &Word, token: &str) -> bool {
    match word {
        Word::Exact(w) => w == token,
        Word::Prefix(p) => token.starts_with(p.as_str()),
        Word::Many => is_many(token),
    }
}

impl Alternatives {
    /// The positions right after each alternative that matches at `at`.
    fn ends(&self, tokens: &[String], at: usize) -> impl Iterator<Item = usize> {
        let single = tokens.get(at).is_some_and(|t| {
            self.singles.contains(t.as_str())
                || self.prefixes.iter().any(|p| t.starts_with(p.as_str()))
                || (self.many && is_many(t))
        });
        let first = tokens.get(at).and_then(|t| self.multi_by_first.get(t.as_str()));
        let candidates = first.into_iter().flatten().chain(&self.multi_other);
        let multi = candidates.filter_map(move |&i| {
            let alt = &self.multi[i];
            (at + alt.len() <= tokens.len()
                && alt.iter().zip(&tokens[at..]).all(|(w, t)| word_matches(w, t)))
            .then_some(at + alt.len())
        });
        single.then_some(at + 1).into_iter().chain(multi)
    }
}

/// Matches `slots` at `at`; returns the end of the first match found.
fn match_slots(slots: &[Slot], tokens: &[String], at: usize) -> Option<usize> {
    let Some((slot, rest)) = slots.split_first() else {
        return Some(at);
    };
    match slot {
        Slot::One(alts) => alts.ends(tokens, at).find_map(|next| match_slots(rest, tokens, next)),
        Slot::Optional(alts) => alts
            .ends(tokens, at)
            .find_map(|next| match_slots(rest, tokens, next))
            .or_else(|| match_slots(rest, tokens, at)),
        Slot::Gap(max) => (0..=*max)
            .take_while(|k| at + k <= tokens.len())
            .find_map(|k| match_slots(rest, tokens, at + k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalise::normalise;

    fn m(pattern: &str, text: &str) -> bool {
        let sets = [("person", "him|her|my_boss")];
        let p = Pattern::compile(pattern, &sets);
        normalise(text).clauses.iter().any(|c| p.find(c).is_some())
    }

    #[test]
    fn slots() {
        assert!(m("kill myself", "I want to KILL myself"));
        assert!(m("kill* myself", "killing myself"));
        assert!(m("want .. die", "i just really want to die"));
        assert!(!m("want .. die", "i want to go to the shop and then die"));
        assert!(m("end [my] life|it_all", "end it all"));
        assert!(m("end [my] life|it_all", "end my life"));
        assert!(m("hurt @person", "I will hurt my boss"));
        assert!(!m("hurt @person", "I will hurt my back"));
        assert!(m("took #many pills", "took 30 pills"));
        assert!(m("took #many pills", "took twenty pills"));
        assert!(!m("took #many pills", "took 2 pills"));
    }

    #[test]
    fn span_is_reported() {
        let p = Pattern::compile("kill myself", &[]);
        let toks = &normalise("i want to kill myself").clauses[0];
        assert_eq!(p.find(toks), Some(Span { start: 3, end: 5 }));
    }
}
