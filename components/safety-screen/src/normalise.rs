//! Text normalisation shared by the screen and the output filter: turns a
//! message into clauses of canonical tokens, so that rules are written once
//! against plain lower-case words.
//!
//! Steps, in order (each is a small table below, so a reviewer can read
//! exactly what is folded together):
//! 1. lower-case; curly quotes become `'`;
//! 2. leetspeak inside words that contain a letter (`k1ll` → `kill`,
//!    `su1c1de` → `suicide`, `k!ll` → `kill`); pure numbers stay numbers;
//! 3. clause breaks at `. ! ? ; : ,`, new lines and dashes, and at the
//!    contrast words `but`, `though`, `although`, `however` (negation never
//!    reaches across a clause: "I'm not suicidal but I want to die");
//! 4. other punctuation becomes a space (`self-harm` → `self harm`);
//! 5. letters spaced out (`k i l l`, `s.u.i.c.i.d.e`) are joined up;
//! 6. contractions, slang and common misspellings are expanded from
//!    [`REWRITES`] (`don't` → `do not`, `wanna` → `want to`,
//!    `suicde` → `suicide`, `unalive` → `kill`, `kms` → `kill myself`);
//! 7. elongations collapse: a run of three or more of the same letter
//!    becomes one (`sooo` → `so`, `dieeee` → `die`, `killlll` → `kil` →
//!    `kill` through the rewrites). Doubled letters are left alone: folding
//!    them too would make `feel` = `fell` and `of` = `off`.

use std::collections::HashMap;
use std::sync::OnceLock;

/// A normalised message: clauses of canonical tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    pub clauses: Vec<Vec<String>>,
}

impl Normalised {
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.clauses.iter().flatten().map(String::as_str)
    }
}

/// Words that end a clause by themselves (the contrast turns the meaning).
const CLAUSE_WORDS: &[&str] = &["but", "though", "tho", "although", "however"];

/// Whole-token rewrites, looked up before squeezing (apostrophes removed).
/// Left: what people type; right: the canonical words.
pub const REWRITES: &[(&str, &str)] = &[
    // contractions (with or without the apostrophe)
    ("dont", "do not"), ("doesnt", "does not"), ("didnt", "did not"),
    ("cant", "can not"), ("cannot", "can not"), ("couldnt", "could not"),
    ("wont", "will not"), ("wouldnt", "would not"), ("shouldnt", "should not"),
    ("isnt", "is not"), ("arent", "are not"), ("wasnt", "was not"),
    ("werent", "were not"), ("havent", "have not"), ("hasnt", "has not"),
    ("hadnt", "had not"), ("aint", "am not"), ("mustnt", "must not"),
    ("im", "i am"), ("ive", "i have"),
    ("youre", "you are"), ("youll", "you will"), ("youd", "you would"),
    ("hes", "he is"), ("shes", "she is"), ("theyre", "they are"),
    ("theyd", "they would"), ("theyll", "they will"), ("itll", "it will"),
    ("itd", "it would"), ("thats", "that is"),
    ("theres", "there is"), ("whats", "what is"), ("its", "it is"),
    ("lets", "let us"), ("everyones", "everyone is"),
    ("imma", "i am going to"), ("ima", "i am going to"),
    // slang
    ("wanna", "want to"), ("gonna", "going to"), ("gotta", "got to"),
    ("tryna", "trying to"), ("finna", "going to"), ("kinda", "kind of"),
    ("u", "you"), ("ur", "your"), ("r", "are"), ("y", "why"),
    ("cuz", "because"), ("coz", "because"), ("bc", "because"),
    ("tonite", "tonight"), ("2nite", "tonight"), ("tmrw", "tomorrow"),
    ("rn", "right now"), ("noone", "no one"), ("nobodys", "nobody is"),
    ("anymore", "any more"), ("alot", "a lot"),
    // risk vocabulary and its usual misspellings / euphemisms
    ("kil", "kill"), ("kiling", "killing"), ("kiled", "killed"), ("kilin", "killing"),
    ("killin", "killing"), ("myselff", "myself"), ("urself", "yourself"),
    ("unalive", "kill"), ("unaliving", "killing"), ("unalived", "killed"),
    ("kms", "kill myself"), ("kys", "kill yourself"),
    ("killmyself", "kill myself"), ("endmylife", "end my life"),
    ("selfharm", "self harm"), ("selfharming", "self harming"),
    ("selfharmed", "self harmed"),
    ("suicde", "suicide"), ("sucide", "suicide"), ("suicid", "suicide"),
    ("suiside", "suicide"), ("suicie", "suicide"), ("sewerslide", "suicide"),
    ("suicdal", "suicidal"), ("sucidal", "suicidal"), ("suisidal", "suicidal"),
    ("suicidle", "suicidal"), ("suicidel", "suicidal"), ("suicidial", "suicidal"),
    ("myslef", "myself"), ("mysefl", "myself"), ("myslf", "myself"),
    ("mysef", "myself"), ("meself", "myself"), ("mself", "myself"),
    ("ded", "dead"), ("dieing", "dying"), ("dyin", "dying"),
    ("od", "overdose"), ("oded", "overdosed"), ("ods", "overdoses"), ("oding", "overdosing"),
    ("pils", "pills"), ("pillz", "pills"),
];

/// Rewrites that need the apostrophe to be recognised (checked first).
const APOSTROPHE_REWRITES: &[(&str, &str)] = &[
    ("od'd", "overdosed"), ("od'ed", "overdosed"), ("won't", "will not"),
    ("can't", "can not"), ("shan't", "shall not"), ("ain't", "am not"),
    ("i'd", "i would"), ("i'll", "i will"), ("he'll", "he will"), ("she'll", "she will"),
    ("it's", "it is"), ("let's", "let us"),
];

/// Pronouns after which `'s` reads "is" (elsewhere `'s` is possessive and dropped).
const S_IS: &[&str] = &[
    "he", "she", "it", "that", "there", "what", "who", "everyone", "everything",
    "nobody", "someone", "something", "life", "here", "where",
];

/// Leetspeak inside a word (only in words that also contain a letter).
fn unleet(c: char) -> char {
    match c {
        '0' => 'o',
        '1' | '!' | '|' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' | '+' => 't',
        _ => c,
    }
}

fn is_leet(c: char) -> bool {
    matches!(c, '0' | '1' | '!' | '|' | '3' | '4' | '@' | '5' | '$' | '7' | '+')
}

/// Collapses every run of three or more of the same letter to one letter.
pub fn collapse_elongation(word: &str) -> String {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::with_capacity(word.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut j = i;
        while j < chars.len() && chars[j] == c {
            j += 1;
        }
        let run = j - i;
        if run >= 3 && c.is_alphabetic() {
            out.push(c);
        } else {
            out.extend(&chars[i..j]);
        }
        i = j;
    }
    out
}

fn is_clause_punct(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | ';' | ':' | ',' | '\n' | '\r' | '—' | '–' | '…')
}

/// One raw whitespace-separated word: leetspeak undone where it is inside
/// letters.
fn unleet_word(word: &str) -> String {
    let chars: Vec<char> = word.chars().collect();
    let has_letter = chars.iter().any(|c| c.is_alphabetic());
    if !has_letter {
        return word.to_string();
    }
    // A leet character counts only after a letter (or after one already
    // converted): "k1ll", "d13", "k!ll"; but "10mg", "4am", "die!" stay.
    let mut out = String::with_capacity(word.len());
    let mut prev_letter = false;
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        let next_letter = next.is_some_and(char::is_alphabetic);
        let convert = is_leet(c)
            && if c.is_ascii_digit() {
                prev_letter
            } else {
                (prev_letter || matches!(c, '$' | '@')) && next_letter
            };
        if convert {
            out.push(unleet(c));
            prev_letter = true;
        } else {
            out.push(c);
            prev_letter = c.is_alphabetic();
        }
    }
    out
}

/// Normalises a message for rule matching.
pub fn normalise(text: &str) -> Normalised {
    let lowered: String = text
        .chars()
        .map(|c| match c {
            '\u{2018}' | '\u{2019}' | '\u{02BC}' | '`' | '\u{00B4}' => '\'',
            _ => c,
        })
        .flat_map(char::to_lowercase)
        .collect();

    // Raw clauses of raw words (apostrophes still in).
    let mut raw_clauses: Vec<Vec<String>> = vec![Vec::new()];
    for word in lowered.split_whitespace() {
        let word = join_dotted(&unleet_word(word));
        let mut current = String::new();
        for c in word.chars() {
            if c.is_alphanumeric() || c == '\'' {
                current.push(c);
            } else if is_clause_punct(c) {
                push_word(&mut raw_clauses, &mut current);
                raw_clauses.push(Vec::new());
            } else {
                push_word(&mut raw_clauses, &mut current);
            }
        }
        push_word(&mut raw_clauses, &mut current);
    }

    let mut clauses = Vec::new();
    for raw in raw_clauses {
        let joined = join_spelled_out(raw);
        let mut clause: Vec<String> = Vec::new();
        for word in joined {
            for token in expand(&word) {
                let token = collapse_elongation(&token);
                if CLAUSE_WORDS.contains(&token.as_str()) {
                    if !clause.is_empty() {
                        clauses.push(std::mem::take(&mut clause));
                    }
                } else if !token.is_empty() {
                    clause.push(token);
                }
            }
        }
        if !clause.is_empty() {
            clauses.push(clause);
        }
    }
    Normalised { clauses }
}

fn push_word(clauses: &mut [Vec<String>], current: &mut String) {
    let w = current.trim_matches('\'');
    if !w.is_empty() {
        clauses.last_mut().expect("at least one clause").push(w.to_string());
    }
    current.clear();
}

/// "s.u.i.c.i.d.e", "k-i-l-l", "d*i*e" → the letters alone (single letters
/// separated by one punctuation mark, at least three of them).
fn join_dotted(word: &str) -> String {
    let chars: Vec<char> = word.chars().collect();
    let letters: Vec<char> = chars.iter().copied().filter(|c| c.is_alphabetic()).collect();
    let dotted = letters.len() >= 3
        && chars.len() >= 2 * letters.len() - 1
        && chars.len() <= 2 * letters.len()
        && chars.iter().step_by(2).all(|c| c.is_alphabetic())
        && chars.iter().skip(1).step_by(2).all(|c| c.is_ascii_punctuation() && *c != '\'');
    if dotted { letters.into_iter().collect() } else { word.to_string() }
}

/// Joins runs of three or more one-letter words ("k i l l" → "kill").
/// "i" and "a" on their own stay words.
fn join_spelled_out(words: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    let mut run: Vec<String> = Vec::new();
    let flush = |run: &mut Vec<String>, out: &mut Vec<String>| {
        if run.len() >= 3 {
            out.push(run.concat());
        } else {
            out.append(run);
        }
        run.clear();
    };
    for w in words {
        if w.chars().count() == 1 && w.chars().all(char::is_alphabetic) {
            run.push(w);
        } else {
            flush(&mut run, &mut out);
            out.push(w);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// [`REWRITES`] by typed form and, for words longer than three letters, by
/// collapsed form too (so "suiiicde" finds "suicde").
fn rewrite_map() -> &'static HashMap<String, &'static str> {
    static MAP: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map: HashMap<String, &'static str> = REWRITES.iter().map(|(f, t)| (f.to_string(), *t)).collect();
        for (from, to) in REWRITES {
            if from.len() > 3 {
                map.entry(collapse_elongation(from)).or_insert(to);
            }
        }
        map
    })
}

/// Expands one word into canonical words (contractions, slang, misspellings).
fn expand(word: &str) -> Vec<String> {
    if let Some((_, to)) = APOSTROPHE_REWRITES.iter().find(|(from, _)| *from == word) {
        return to.split(' ').map(str::to_string).collect();
    }
    let mut word = word.to_string();
    let mut suffix: Option<&str> = None;
    if word.contains('\'') {
        if let Some(stem) = word.strip_suffix("n't") {
            word = stem.to_string();
            suffix = Some("not");
        } else if let Some(stem) = word.strip_suffix("'m") {
            word = stem.to_string();
            suffix = Some("am");
        } else if let Some(stem) = word.strip_suffix("'re") {
            word = stem.to_string();
            suffix = Some("are");
        } else if let Some(stem) = word.strip_suffix("'ve") {
            word = stem.to_string();
            suffix = Some("have");
        } else if let Some(stem) = word.strip_suffix("'ll") {
            word = stem.to_string();
            suffix = Some("will");
        } else if let Some(stem) = word.strip_suffix("'d") {
            word = stem.to_string();
            suffix = Some("would");
        } else if let Some(stem) = word.strip_suffix("'s") {
            suffix = S_IS.contains(&stem).then_some("is");
            word = stem.to_string();
        }
        word.retain(|c| c != '\'');
    }
    let mut out: Vec<String> = match rewrite_map().get(word.as_str()).or_else(|| rewrite_map().get(collapse_elongation(&word).as_str())) {
        Some(to) => to.split(' ').map(str::to_string).collect(),
        None => vec![word],
    };
    if let Some(s) = suffix {
        out.push(s.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(text: &str) -> Vec<String> {
        normalise(text).clauses.iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn case_spacing_and_punctuation() {
        assert_eq!(flat("I  WANT\tto   DIE!!!"), vec!["i want to die"]);
        assert_eq!(flat("self-harm"), vec!["self harm"]);
        assert_eq!(flat("k i l l myself"), vec!["kill myself"]);
        assert_eq!(flat("s.u.i.c.i.d.e"), vec!["suicide"]);
    }

    #[test]
    fn contractions_and_slang() {
        assert_eq!(flat("I don't wanna be here"), vec!["i do not want to be here"]);
        assert_eq!(flat("im gonna"), vec!["i am going to"]);
        assert_eq!(flat("I won’t be around"), vec!["i will not be around"]);
        assert_eq!(flat("he's gone, mum's car"), vec!["he is gone", "mum car"]);
    }

    #[test]
    fn leetspeak_misspellings_and_elongations() {
        assert_eq!(flat("k1ll mys3lf"), vec!["kill myself"]);
        assert_eq!(flat("su1c1de"), vec!["suicide"]);
        assert_eq!(flat("suicde"), vec!["suicide"]);
        assert_eq!(flat("kil myslef"), vec!["kill myself"]);
        assert_eq!(flat("killlll meee"), vec!["kill me"]);
        assert_eq!(flat("I feel, I fell, of, off"), vec!["i feel", "i fell", "of", "off"]);
        assert_eq!(flat("sooooo tired"), vec!["so tired"]);
        assert_eq!(flat("unalive myself"), vec!["kill myself"]);
        assert_eq!(flat("kms"), vec!["kill myself"]);
        assert_eq!(flat("i think i od'd"), vec!["i think i overdosed"]);
        // numbers stay numbers
        assert_eq!(flat("took 30 pills"), vec!["took 30 pills"]);
    }

    #[test]
    fn clauses_split_at_punctuation_and_contrast() {
        assert_eq!(flat("I'm not suicidal but I want to die"), vec!["i am not suicidal", "i want to die"]);
        assert_eq!(flat("No, I want to die."), vec!["no", "i want to die"]);
    }
}
