//! Turning a growing list of generated tokens into streamed text: holds
//! back an incomplete UTF-8 character and any tail that could still become
//! a stop string, and cuts the text where a stop string appears.

/// What a new token did to the text.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamStep<'a> {
    /// Text that is now final (may be empty).
    Text(&'a str),
    /// A stop string appeared; this is the last text before it.
    Stopped(&'a str),
}

pub struct TextStream {
    stop_strings: Vec<String>,
    text: String,
    emitted: usize,
}

impl TextStream {
    pub fn new(stop_strings: Vec<String>) -> Self {
        let stop_strings = stop_strings.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            stop_strings,
            text: String::new(),
            emitted: 0,
        }
    }

    /// Takes the decoded text of all generated tokens so far.
    pub fn update(&mut self, decoded: String) -> StreamStep<'_> {
        self.text = decoded;
        let search_from = self.emitted.saturating_sub(self.longest_stop());
        let search_from = floor_char_boundary(&self.text, search_from);
        let hit = self
            .stop_strings
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|i| search_from + i)
            })
            .min();
        if let Some(at) = hit {
            let start = self.emitted.min(at);
            self.text.truncate(at);
            self.emitted = at;
            return StreamStep::Stopped(&self.text[start..]);
        }
        let mut safe = self.text.len();
        // An incomplete multi-byte character decodes as U+FFFD at the end.
        while self.text[..safe].ends_with('\u{FFFD}') {
            safe -= '\u{FFFD}'.len_utf8();
        }
        // A tail that is a prefix of a stop string may still become one.
        let visible = &self.text[..safe];
        let hold = self
            .stop_strings
            .iter()
            .filter_map(|s| {
                (1..s.len())
                    .rev()
                    .find(|&len| s.is_char_boundary(len) && visible.ends_with(&s[..len]))
            })
            .max()
            .unwrap_or(0);
        safe -= hold;
        let start = self.emitted.min(safe);
        let out = &self.text[start..safe];
        self.emitted = self.emitted.max(safe);
        StreamStep::Text(out)
    }

    /// At the end of generation: whatever was held back.
    pub fn finish(&mut self) -> &str {
        let start = self.emitted.min(self.text.len());
        self.emitted = self.text.len();
        &self.text[start..]
    }

    /// The whole text (cut at a stop string if one appeared).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn longest_stop(&self) -> usize {
        self.stop_strings.iter().map(String::len).max().unwrap_or(0)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_possible_stop_prefixes_and_cuts_at_stop() {
        let mut s = TextStream::new(vec!["\nUser:".into()]);
        assert_eq!(s.update("Hello".into()), StreamStep::Text("Hello"));
        assert_eq!(s.update("Hello\nUs".into()), StreamStep::Text(""));
        assert_eq!(s.update("Hello\nUsual".into()), StreamStep::Text("\nUsual"));
        assert_eq!(
            s.update("Hello\nUsual\nUser: hi".into()),
            StreamStep::Stopped("")
        );
        assert_eq!(s.text(), "Hello\nUsual");
    }

    #[test]
    fn holds_back_incomplete_utf8_and_flushes_at_finish() {
        let mut s = TextStream::new(vec![]);
        assert_eq!(s.update("caf\u{FFFD}".into()), StreamStep::Text("caf"));
        assert_eq!(s.update("café".into()), StreamStep::Text("é"));
        let _ = s.update("café\u{FFFD}".into());
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn stop_string_inside_one_token_keeps_the_text_before_it() {
        let mut s = TextStream::new(vec!["END".into()]);
        assert_eq!(s.update("abc".into()), StreamStep::Text("abc"));
        assert_eq!(s.update("abcdefENDxyz".into()), StreamStep::Stopped("def"));
    }
}
