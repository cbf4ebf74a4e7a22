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
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A fast hash for the word tables (FxHash's mixing, 8 bytes at a time).
/// The tables are fixed at compile time and only looked up with message
/// words, so there is nothing to flood; SipHash cost more than the match.
#[derive(Default, Clone, Copy)]
pub struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(c.try_into().expect("8 bytes"))).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(last)).wrapping_mul(K);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type Fast = BuildHasherDefault<WordHasher>;
/// Keyed by words of the static rule tables (no allocation per word:
/// compiling the rule set is what a fresh instance pays on its first call).
pub type WordMap<V> = HashMap<&'static str, V, Fast>;
pub type WordSet = HashSet<&'static str, Fast>;

#[derive(Debug, Clone)]
enum Word {
    Exact(&'static str),
    Prefix(&'static str),
    Many,
}

/// Some alternatives, split for speed: one-word exact alternatives go in a
/// hash set (a slot may list a hundred words).
#[derive(Debug, Clone, Default)]
struct Words {
    singles: WordSet,
    prefixes: Vec<&'static str>,
    many: bool,
    multi: Vec<Vec<Word>>,
    /// Indices into `multi` by exact first word; the rest start with a prefix.
    multi_by_first: WordMap<Vec<usize>>,
    multi_other: Vec<usize>,
}

/// The alternatives of one slot: its own words, and the named sets
/// (`@person`) it lists, each compiled once and shared by every slot that
/// names it (the rules name a few sets hundreds of times). The sets'
/// multi-word alternatives (a few) are copied into `own` too, so that all
/// of a slot's multi-word alternatives are tried in the order it lists them.
#[derive(Debug, Clone, Default)]
struct Alternatives {
    own: Words,
    shared: Vec<Arc<Words>>,
}

impl Alternatives {
    fn parts(&self) -> impl Iterator<Item = &Words> {
        std::iter::once(&self.own).chain(self.shared.iter().map(|w| &**w))
    }
    fn many(&self) -> bool {
        self.parts().any(|w| w.many)
    }
    fn len(&self) -> usize {
        self.own.multi.len() + self.parts().map(|w| w.singles.len() + w.prefixes.len()).sum::<usize>()
    }
}

/// Compiles patterns against one table of named sets, each set once.
pub struct Compiler {
    sets: &'static [(&'static str, &'static str)],
    compiled: HashMap<&'static str, Arc<Words>>,
}

impl Compiler {
    pub fn new(sets: &'static [(&'static str, &'static str)]) -> Compiler {
        Compiler { sets, compiled: HashMap::new() }
    }

    /// Compiles `source` (see [`Pattern::compile`]).
    pub fn compile(&mut self, source: &'static str) -> Pattern {
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
                    Slot::Optional(self.alternatives(inner, source))
                }
                _ => Slot::One(self.alternatives(item, source)),
            };
            slots.push(slot);
        }
        assert!(!slots.is_empty(), "empty pattern");
        let anchor = slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::One(a) if !a.many() => Some((i, a.len())),
                _ => None,
            })
            .min_by_key(|&(_, n)| n)
            .map(|(i, _)| i);
        Pattern { slots, anchor }
    }

    /// A slot's alternatives: its own words, and each `@set` (alone in
    /// its alternative) as the shared compiled set.
    fn alternatives(&mut self, item: &'static str, source: &str) -> Alternatives {
        let mut alts = Alternatives::default();
        for alt in item.split('|') {
            if let Some(name) = alt.strip_prefix('@') {
                let set = match self.compiled.get(name) {
                    Some(set) => set.clone(),
                    None => {
                        let (name, list) = set_entry(self.sets, name, source);
                        let mut words = Words::default();
                        add_words(&mut words, list, self.sets, source);
                        words.index_multi();
                        self.compiled.entry(name).or_insert(Arc::new(words)).clone()
                    }
                };
                alts.own.multi.extend(set.multi.iter().cloned());
                alts.shared.push(set);
            } else {
                add_words(&mut alts.own, alt, self.sets, source);
            }
        }
        alts.own.index_multi();
        alts
    }
}

/// Set `@name`: (its name, its word list).
fn set_entry(sets: &'static [(&'static str, &'static str)], name: &str, source: &str) -> (&'static str, &'static str) {
    *sets.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("unknown set @{name} in pattern `{source}`"))
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
    /// (Many patterns over one table: [`Compiler`], which compiles each set once.)
    pub fn compile(source: &'static str, sets: &'static [(&'static str, &'static str)]) -> Pattern {
        Compiler::new(sets).compile(source)
    }

    /// Whether some token could start an alternative of the anchor slot.
    fn anchored(&self, tokens: &[String]) -> bool {
        let Some(Slot::One(a)) = self.anchor.map(|i| &self.slots[i]) else {
            return true;
        };
        tokens.iter().any(|t| {
            a.parts().any(|a| a.single(t) || a.multi.iter().any(|m| m.first().is_some_and(|w| word_matches(w, t))))
        })
    }

    /// The first (leftmost) match in `tokens`.
    pub fn find(&self, tokens: &[String]) -> Option<Span> {
        self.find_all(tokens).next()
    }

    /// One match per start position, left to right.
    pub fn find_all<'a>(&'a self, tokens: &'a [String]) -> impl Iterator<Item = Span> + 'a {
        let possible = self.anchored(tokens);
        self.find_all_anchored(tokens, possible)
    }

    /// [`Pattern::find_all`] for a caller that already knows whether some
    /// token can start the anchor slot (`possible`, from an [`AnchorIndex`]
    /// over many patterns): a clause where none can has no match.
    pub fn find_all_anchored<'a>(&'a self, tokens: &'a [String], possible: bool) -> impl Iterator<Item = Span> + 'a {
        (0..if possible { tokens.len() } else { 0 }).filter_map(move |start| {
            match_slots(&self.slots, tokens, start).map(|end| Span { start, end })
        })
    }

    /// For each mandatory slot that names its words, its keys: one of
    /// them must be some token for the pattern to match (a multi-word
    /// alternative counts by its first word). Slots that any token may
    /// satisfy (optional, gaps, `#many`, an empty prefix) are left out.
    fn mandatory_keys(&self) -> Vec<SlotKeys<'_>> {
        let mut keys = Vec::new();
        for slot in &self.slots {
            let Slot::One(alts) = slot else { continue };
            if alts.many() || alts.shared.iter().any(|w| w.keys().is_none()) {
                continue;
            }
            let Some((exact, prefixes)) = alts.own.keys() else { continue };
            keys.push(SlotKeys { exact, prefixes, sets: alts.shared.iter().collect() });
        }
        keys
    }
}

/// What a mandatory slot can be filled by: its own words and prefixes, and
/// any word of its shared sets.
struct SlotKeys<'a> {
    exact: Vec<&'static str>,
    prefixes: Vec<&'static str>,
    sets: Vec<&'a Arc<Words>>,
}

impl Words {
    /// (exact words, prefixes) one of which a token must be to start one of
    /// these alternatives; `None` when any token may (`#many`, `*`).
    fn keys(&self) -> Option<(Vec<&'static str>, Vec<&'static str>)> {
        if self.many || self.prefixes.iter().any(|p| p.is_empty()) {
            return None;
        }
        let mut exact: Vec<&'static str> = self.singles.iter().copied().collect();
        let mut prefixes = self.prefixes.clone();
        for m in &self.multi {
            match m.first() {
                Some(Word::Exact(w)) => exact.push(w),
                Some(Word::Prefix(p)) if !p.is_empty() => prefixes.push(p),
                _ => return None,
            }
        }
        Some((exact, prefixes))
    }
}

/// An inverted index of many patterns' mandatory slots: one pass over a
/// clause's tokens says which patterns can match in it at all (every
/// mandatory slot has a token that could fill it), instead of each pattern
/// scanning the clause (the screen runs hundreds of patterns over every
/// clause, and almost none can match). Sound: a pattern it rules out has
/// no match; one it keeps still goes through the full match.
pub struct AnchorIndex {
    patterns: usize,
    slots: usize,
    /// Per pattern, how many keyed mandatory slots it has.
    needed: Vec<u32>,
    /// Per slot, the pattern it belongs to.
    owner: Vec<u32>,
    /// Patterns with no keyed slot: candidates in every clause.
    unkeyed: Vec<u32>,
    /// Per shared set, the slots that list it.
    set_slots: Vec<Vec<u32>>,
    /// What each key fills, by exact word and by prefix.
    exact: WordMap<Fills>,
    prefixes: WordMap<Fills>,
    /// Prefix lengths (bytes) that occur in `prefixes`, ascending.
    prefix_lens: Vec<usize>,
}

/// The slots a key fills: directly (a slot's own word) and through the
/// shared sets that hold it (each set indexed once, however many slots
/// list it: building the index is part of a fresh instance's first call).
#[derive(Default)]
struct Fills {
    slots: Vec<u32>,
    sets: Vec<u32>,
}

/// Appends `id` unless it is already last (one slot or set lists a key once).
fn push_once(list: &mut Vec<u32>, id: u32) {
    if list.last() != Some(&id) {
        list.push(id);
    }
}

/// A set of small ids (patterns of an [`AnchorIndex`]).
pub struct Candidates(Vec<u64>);

impl Candidates {
    fn new(n: usize) -> Candidates {
        Candidates(vec![0; n.div_ceil(64)])
    }
    pub fn contains(&self, id: usize) -> bool {
        self.0[id / 64] & (1 << (id % 64)) != 0
    }
    fn insert(&mut self, id: usize) {
        self.0[id / 64] |= 1 << (id % 64);
    }
}

impl AnchorIndex {
    /// Indexes `patterns`; pattern `i` is id `i` in [`Candidates`].
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a Pattern>) -> AnchorIndex {
        let mut index = AnchorIndex {
            patterns: 0,
            slots: 0,
            needed: Vec::new(),
            owner: Vec::new(),
            unkeyed: Vec::new(),
            set_slots: Vec::new(),
            exact: WordMap::default(),
            prefixes: WordMap::default(),
            prefix_lens: Vec::new(),
        };
        // Shared sets by identity, indexed on first sight.
        let mut set_ids: HashMap<*const Words, u32> = HashMap::new();
        for p in patterns {
            let pattern = index.patterns as u32;
            index.patterns += 1;
            let keys = p.mandatory_keys();
            index.needed.push(keys.len() as u32);
            if keys.is_empty() {
                index.unkeyed.push(pattern);
            }
            for slot in keys {
                let id = index.slots as u32;
                index.slots += 1;
                index.owner.push(pattern);
                index.add_keys(&slot.exact, &slot.prefixes, |f| &mut f.slots, id);
                for set in slot.sets {
                    let set_id = match set_ids.get(&Arc::as_ptr(set)) {
                        Some(&s) => s,
                        None => {
                            let s = index.set_slots.len() as u32;
                            index.set_slots.push(Vec::new());
                            set_ids.insert(Arc::as_ptr(set), s);
                            let (exact, prefixes) = set.keys().expect("keyed: checked by mandatory_keys");
                            index.add_keys(&exact, &prefixes, |f| &mut f.sets, s);
                            s
                        }
                    };
                    push_once(&mut index.set_slots[set_id as usize], id);
                }
            }
        }
        index.prefix_lens.sort_unstable();
        index
    }

    fn add_keys(&mut self, exact: &[&'static str], prefixes: &[&'static str], list: fn(&mut Fills) -> &mut Vec<u32>, id: u32) {
        for &w in exact {
            push_once(list(self.exact.entry(w).or_default()), id);
        }
        for &p in prefixes {
            push_once(list(self.prefixes.entry(p).or_default()), id);
            if !self.prefix_lens.contains(&p.len()) {
                self.prefix_lens.push(p.len());
            }
        }
    }

    /// The patterns that can match somewhere in `tokens`: each filled slot
    /// counts towards its pattern, which is a candidate once all its keyed
    /// slots are filled (work in proportion to the words that hit the index,
    /// not to the number of patterns).
    pub fn candidates(&self, tokens: &[String]) -> Candidates {
        let mut filled = Candidates::new(self.slots);
        let mut count = vec![0u32; self.patterns];
        let mut c = Candidates::new(self.patterns);
        for &p in &self.unkeyed {
            c.insert(p as usize);
        }
        let mut fill_slots = |ids: &[u32]| {
            for &id in ids {
                let id = id as usize;
                if !filled.contains(id) {
                    filled.insert(id);
                    let p = self.owner[id] as usize;
                    count[p] += 1;
                    if count[p] == self.needed[p] {
                        c.insert(p);
                    }
                }
            }
        };
        let mut fill = |f: &Fills| {
            fill_slots(&f.slots);
            for &s in &f.sets {
                fill_slots(&self.set_slots[s as usize]);
            }
        };
        for t in tokens {
            if let Some(f) = self.exact.get(t.as_str()) {
                fill(f);
            }
            for &n in self.prefix_lens.iter().take_while(|&&n| n <= t.len()) {
                if let Some(f) = t.get(..n).and_then(|p| self.prefixes.get(p)) {
                    fill(f);
                }
            }
        }
        c
    }
}

/// Adds the alternatives of `item` (`a|b_c|d*|@set`) to `words`, a
/// named set's words inline.
fn add_words(words: &mut Words, item: &'static str, sets: &'static [(&'static str, &'static str)], source: &str) {
    for alt in item.split('|') {
        if let Some(name) = alt.strip_prefix('@') {
            add_words(words, set_entry(sets, name, source).1, sets, source);
            continue;
        }
        assert!(!alt.is_empty(), "empty alternative in pattern `{source}`");
        let mut parts = alt.split('_').map(|w| {
            if w == "#many" {
                Word::Many
            } else if let Some(p) = w.strip_suffix('*') {
                Word::Prefix(p)
            } else {
                Word::Exact(w)
            }
        });
        let first = parts.next().expect("split yields one part");
        let rest: Vec<Word> = parts.collect();
        if rest.is_empty() {
            match first {
                Word::Exact(w) => {
                    words.singles.insert(w);
                }
                Word::Prefix(p) => words.prefixes.push(p),
                Word::Many => words.many = true,
            }
        } else {
            let mut multi = Vec::with_capacity(rest.len() + 1);
            multi.push(first);
            multi.extend(rest);
            words.multi.push(multi);
        }
    }
}

impl Words {
    /// Indexes the multi-word alternatives by their first word.
    fn index_multi(&mut self) {
        self.multi_by_first.clear();
        self.multi_other.clear();
        for (i, alt) in self.multi.iter().enumerate() {
            match &alt[0] {
                Word::Exact(w) => self.multi_by_first.entry(w).or_default().push(i),
                _ => self.multi_other.push(i),
            }
        }
    }
}

fn is_many(token: &str) -> bool {
    token.parse::<u32>().is_ok_and(|n| n >= 8) || MANY_WORDS.contains(&token)
}

fn word_matches(word: &Word, token: &str) -> bool {
    match word {
        Word::Exact(w) => *w == token,
        Word::Prefix(p) => token.starts_with(p),
        Word::Many => is_many(token),
    }
}

impl Alternatives {
    /// The positions right after each alternative that matches at `at`: a
    /// one-word alternative first, then the multi-word ones (the first end
    /// that lets the rest match is the one a match reports).
    fn ends<'a>(&'a self, tokens: &'a [String], at: usize) -> impl Iterator<Item = usize> + 'a {
        let single = tokens.get(at).is_some_and(|t| self.parts().any(|w| w.single(t)));
        single.then_some(at + 1).into_iter().chain(self.own.multi_ends(tokens, at))
    }
}

impl Words {
    /// Whether `token` is one of these one-word alternatives.
    fn single(&self, t: &str) -> bool {
        self.singles.contains(t) || self.prefixes.iter().any(|p| t.starts_with(p)) || (self.many && is_many(t))
    }

    /// The positions right after each of these multi-word alternatives that matches at `at`.
    fn multi_ends<'a>(&'a self, tokens: &'a [String], at: usize) -> impl Iterator<Item = usize> + 'a {
        let first = tokens.get(at).and_then(|t| self.multi_by_first.get(t.as_str()));
        let candidates = first.into_iter().flatten().chain(&self.multi_other);
        candidates.filter_map(move |&i| {
            let alt = &self.multi[i];
            (at + alt.len() <= tokens.len()
                && alt.iter().zip(&tokens[at..]).all(|(w, t)| word_matches(w, t)))
            .then_some(at + alt.len())
        })
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

    fn m(pattern: &'static str, text: &str) -> bool {
        const SETS: &[(&str, &str)] = &[("person", "him|her|my_boss")];
        let p = Pattern::compile(pattern, SETS);
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
    fn the_anchor_index_keeps_every_pattern_that_matches() {
        let sets = crate::rules::SETS;
        let patterns: Vec<Pattern> = crate::rules::RULES
            .iter()
            .flat_map(|r| r.patterns.iter().chain(r.unless).chain(r.with))
            .map(|p| Pattern::compile(p, sets))
            .collect();
        let index = AnchorIndex::new(&patterns);
        let texts = ["I want to kill myself tonight", "this commute is killing me", "took 30 pills", "hello there",
                     "my husband hits me and I am scared", "I keep cutting", "", "ünïcödé wörds ok",
                     "How can I sleep better before exams?"];
        let (mut kept, mut matched) = (0, 0);
        for text in texts {
            for clause in &normalise(text).clauses {
                let c = index.candidates(clause);
                for (i, p) in patterns.iter().enumerate() {
                    let m = p.find(clause).is_some();
                    assert!(!m || c.contains(i), "{text}: pattern {i} matches but was ruled out");
                    kept += c.contains(i) as usize;
                    matched += m as usize;
                }
            }
        }
        assert!(kept < patterns.len(), "the index rules most patterns out ({kept} kept, {matched} matched)");
    }

    /// Every `@set` written out as its word list: the form every slot had
    /// before sets were compiled once and shared.
    fn inlined(source: &str, sets: &[(&str, &str)]) -> String {
        fn list(alts: &str, sets: &[(&str, &str)]) -> String {
            let expand = |a: &str| match a.strip_prefix('@') {
                Some(name) => list(sets.iter().find(|(n, _)| *n == name).expect("known set").1, sets),
                None => a.to_string(),
            };
            alts.split('|').map(expand).collect::<Vec<_>>().join("|")
        }
        let item = |item: &str| match item.strip_prefix('[').and_then(|i| i.strip_suffix(']')) {
            Some(inner) => format!("[{}]", list(inner, sets)),
            None if item.starts_with("..") => item.to_string(),
            None => list(item, sets),
        };
        source.split_whitespace().map(item).collect::<Vec<_>>().join(" ")
    }

    /// The screen's and the output filter's patterns find the same spans
    /// (same starts, same ends) with shared sets as with every set written
    /// out, over the labelled messages and some model-style replies.
    #[test]
    fn shared_sets_match_exactly_as_inlined_ones() {
        let screen: Vec<&'static str> =
            crate::rules::RULES.iter().flat_map(|r| r.patterns.iter().chain(r.unless).chain(r.with)).copied().collect();
        let filter: Vec<&'static str> = crate::output_filter::OUT_RULES
            .iter()
            .flat_map(|r| r.patterns.iter().chain(r.unless))
            .filter(|p| **p != "#dose")
            .copied()
            .collect();
        let mut texts: Vec<String> = include_str!("../tests/screening_set.jsonl")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a labelled message")["text"].as_str().expect("text").to_string())
            .collect();
        texts.extend(
            ["You have depressive disorder.", "It sounds like major depressive disorder, but only a clinician can say.",
             "Take 50mg of sertraline twice a day.", "You are clearly bipolar.", "That sounds like an anxiety disorder.",
             "It sounds like depressive disorder to me.", "Seems like manic depressive episodes."]
                .map(String::from),
        );
        let mut compared = 0;
        for (sources, sets) in [(screen, crate::rules::SETS), (filter, crate::output_filter::OUT_SETS)] {
            let mut compiler = Compiler::new(sets);
            let pairs: Vec<(Pattern, Pattern)> = sources
                .iter()
                .map(|&p| (compiler.compile(p), Pattern::compile(Box::leak(inlined(p, sets).into_boxed_str()), &[])))
                .collect();
            for text in &texts {
                for clause in &normalise(text).clauses {
                    for (i, (shared, inline)) in pairs.iter().enumerate() {
                        let a: Vec<Span> = shared.find_all(clause).collect();
                        let b: Vec<Span> = inline.find_all(clause).collect();
                        assert_eq!(a, b, "pattern `{}` on {clause:?}", sources[i]);
                        compared += a.len();
                    }
                }
            }
        }
        assert!(compared > 100, "the texts exercise the patterns ({compared} matches compared)");
    }

    #[test]
    fn span_is_reported() {
        let p = Pattern::compile("kill myself", &[]);
        let toks = &normalise("i want to kill myself").clauses[0];
        assert_eq!(p.find(toks), Some(Span { start: 3, end: 5 }));
    }
}
