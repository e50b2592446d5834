//! `stop` sequences for streamed text.
//!
//! mistral.rs looks for stop strings in the completion *before* it appends the newest
//! token (`Sequence::is_done` runs ahead of `add_token`), so when streaming it has
//! already sent the chunk that completes a stop string, and one more token, by the
//! time it stops. Its non-streamed text is cut correctly. To give streams the same
//! text, every streamed choice passes through a [`StopFilter`]: it holds back any tail
//! that could still grow into a stop string and ends the choice where one begins.

/// Per-choice stop-sequence filter.
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    pending: String,
    stopped: bool,
}

impl StopFilter {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            pending: String::new(),
            stopped: false,
        }
    }

    /// True once a stop sequence was seen: nothing more is emitted.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Takes the next piece of text; returns what may be shown now.
    pub fn push(&mut self, text: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.pending.push_str(text);
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            self.stopped = true;
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return out;
        }
        // Keep the longest tail that is a proper prefix of some stop string.
        let hold_from = self
            .pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.pending.len());
        let out = self.pending[..hold_from].to_string();
        self.pending.drain(..hold_from);
        out
    }

    /// The end of the text: whatever was held back is shown.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut f = StopFilter::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            out += &f.push(p);
        }
        if !f.stopped() {
            out += &f.finish();
        }
        (out, f.stopped())
    }

    #[test]
    fn cuts_at_a_stop_split_across_pieces_and_holds_back_partial_matches() {
        assert_eq!(
            run(&["END"], &["ab", "cE", "N", "Dxyz"]),
            ("abc".into(), true)
        );
        assert_eq!(run(&["END"], &["abE", "Nope"]), ("abENope".into(), false));
        assert_eq!(run(&["x", "bc"], &["abcx"]), ("a".into(), true));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        // Multi-byte text is split on character boundaries only.
        assert_eq!(run(&["é!"], &["café", "?"]), ("café?".into(), false));
        let mut f = StopFilter::new(vec!["END".into()]);
        assert_eq!(f.push("xxE"), "xx");
        assert_eq!(f.finish(), "E");
    }
}
