//! nltk's Punkt sentence tokenizer at inference time, with the English parameters the
//! reference loads (`PunktTokenizer("english")`): the same word tokenization, first pass
//! (abbreviations, ellipses, sentence-final periods), second pass (collocations, orthographic
//! heuristic, frequent sentence starters), candidate contexts and boundary realignment.

use std::sync::LazyLock;

use fancy_regex::Regex;

use crate::{py, tables};

fn has(set: &[&str], s: &str) -> bool {
    set.binary_search(&s).is_ok()
}

const ORTHO_BEG_UC: u32 = 1 << 1;
const ORTHO_MID_UC: u32 = 1 << 2;
const ORTHO_UNK_UC: u32 = 1 << 3;
const ORTHO_BEG_LC: u32 = 1 << 4;
const ORTHO_MID_LC: u32 = 1 << 5;
const ORTHO_UNK_LC: u32 = 1 << 6;
const ORTHO_UC: u32 = ORTHO_BEG_UC + ORTHO_MID_UC + ORTHO_UNK_UC;
const ORTHO_LC: u32 = ORTHO_BEG_LC + ORTHO_MID_LC + ORTHO_UNK_LC;

/// Punkt's trained parameters.
pub struct Punkt;

/// The English model, parsed once.
pub static ENGLISH: LazyLock<Punkt> = LazyLock::new(Punkt::english);

struct Tok {
    tok: String,
    typ: String,
    period_final: bool,
    sentbreak: bool,
    abbr: bool,
    ellipsis: bool,
}

static RE_NUMERIC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^-?[\.,]?\d[\d,\.-]*\.?$").unwrap());

impl Tok {
    fn new(tok: &str) -> Tok {
        let low = py::lower(tok);
        let typ = if RE_NUMERIC.is_match(&low).unwrap_or(false) {
            "##number##".to_string()
        } else {
            low
        };
        Tok {
            period_final: tok.ends_with('.'),
            tok: tok.to_string(),
            typ,
            sentbreak: false,
            abbr: false,
            ellipsis: false,
        }
    }
    fn type_no_period(&self) -> &str {
        if self.typ.chars().count() > 1 && self.typ.ends_with('.') {
            &self.typ[..self.typ.len() - 1]
        } else {
            &self.typ
        }
    }
    fn type_no_sentperiod(&self) -> &str {
        if self.sentbreak {
            self.type_no_period()
        } else {
            &self.typ
        }
    }
    fn first(&self) -> char {
        self.tok.chars().next().unwrap_or(' ')
    }
    fn first_upper(&self) -> bool {
        self.first().is_uppercase()
    }
    fn first_lower(&self) -> bool {
        self.first().is_lowercase()
    }
    fn is_ellipsis(&self) -> bool {
        self.tok.len() >= 2 && self.tok.chars().all(|c| c == '.')
    }
    fn is_initial(&self) -> bool {
        let mut c = self.tok.chars();
        matches!((c.next(), c.next(), c.next()), (Some(a), Some('.'), None) if py::is_alpha_word(a))
    }
}

/// A candidate boundary: a sentence-end character followed by other punctuation or by
/// whitespace and a token (char indices).
struct EndContext {
    at: usize,
    after_end: usize,
    next_tok: Option<usize>,
}

fn is_non_word(c: char) -> bool {
    matches!(
        c,
        ')' | '"' | ';' | '}' | ']' | '*' | ':' | '@' | '\'' | '(' | '{' | '[' | '?' | '!'
    )
}

impl Punkt {
    fn english() -> Punkt {
        Punkt
    }

    fn tokenize_words(&self, text: &str) -> Vec<Tok> {
        let mut out = Vec::new();
        for line in text.split('\n') {
            if py::strip(line).is_empty() {
                continue;
            }
            let chars: Vec<char> = line.chars().collect();
            for (a, b) in word_spans(&chars) {
                out.push(Tok::new(&chars[a..b].iter().collect::<String>()));
            }
        }
        out
    }

    fn first_pass(&self, t: &mut Tok) {
        if matches!(t.tok.as_str(), "." | "?" | "!") {
            t.sentbreak = true;
        } else if t.is_ellipsis() {
            t.ellipsis = true;
        } else if t.period_final && !t.tok.ends_with("..") {
            let stem = py::lower(&t.tok[..t.tok.len() - 1]);
            let last = stem.rsplit('-').next().unwrap_or("");
            if has(tables::PUNKT_ABBREV, &stem) || has(tables::PUNKT_ABBREV, last) {
                t.abbr = true;
            } else {
                t.sentbreak = true;
            }
        }
    }

    fn ortho_of(&self, typ: &str) -> u32 {
        tables::PUNKT_ORTHO
            .binary_search_by(|(k, _)| (*k).cmp(typ))
            .map_or(0, |i| tables::PUNKT_ORTHO[i].1)
    }

    /// Some(true) / Some(false) / None for "unknown".
    fn ortho_heuristic(&self, t: &Tok) -> Option<bool> {
        if matches!(t.tok.as_str(), ";" | ":" | "," | "." | "!" | "?") {
            return Some(false);
        }
        let oc = self.ortho_of(t.type_no_sentperiod());
        if t.first_upper() && oc & ORTHO_LC != 0 && oc & ORTHO_MID_UC == 0 {
            return Some(true);
        }
        if t.first_lower() && (oc & ORTHO_UC != 0 || oc & ORTHO_BEG_LC == 0) {
            return Some(false);
        }
        None
    }

    fn second_pass(&self, toks: &mut [Tok], i: usize) {
        let (a, b) = toks.split_at_mut(i + 1);
        let (t1, t2) = (&mut a[i], &b[0]);
        if !t1.period_final {
            return;
        }
        let typ = t1.type_no_period().to_string();
        let next_typ = t2.type_no_sentperiod();
        let initial = t1.is_initial();
        if tables::PUNKT_COLLOC
            .binary_search(&(typ.as_str(), next_typ))
            .is_ok()
        {
            t1.sentbreak = false;
            t1.abbr = true;
            return;
        }
        if (t1.abbr || t1.ellipsis) && !initial {
            if self.ortho_heuristic(t2) == Some(true) {
                t1.sentbreak = true;
                return;
            }
            if t2.first_upper() && has(tables::PUNKT_STARTERS, next_typ) {
                t1.sentbreak = true;
                return;
            }
        }
        if initial || typ == "##number##" {
            let h = self.ortho_heuristic(t2);
            if h == Some(false) {
                t1.sentbreak = false;
                t1.abbr = true;
                return;
            }
            if h.is_none() && initial && t2.first_upper() && self.ortho_of(next_typ) & ORTHO_LC == 0
            {
                t1.sentbreak = false;
                t1.abbr = true;
            }
        }
    }

    fn contains_sentbreak(&self, text: &str) -> bool {
        let mut toks = self.tokenize_words(text);
        for t in toks.iter_mut() {
            self.first_pass(t);
        }
        for i in 0..toks.len().saturating_sub(1) {
            self.second_pass(&mut toks, i);
        }
        toks.iter()
            .position(|t| t.sentbreak)
            .is_some_and(|p| p + 1 < toks.len())
    }

    fn end_contexts(chars: &[char]) -> Vec<EndContext> {
        let n = chars.len();
        let mut out = Vec::new();
        for i in 0..n {
            if !matches!(chars[i], '.' | '?' | '!') {
                continue;
            }
            if i + 1 < n && is_non_word(chars[i + 1]) {
                out.push(EndContext {
                    at: i,
                    after_end: i + 2,
                    next_tok: None,
                });
                continue;
            }
            let mut j = i + 1;
            while j < n && py::is_space(chars[j]) {
                j += 1;
            }
            if j > i + 1 && j < n {
                let mut k = j;
                while k < n && !py::is_space(chars[k]) {
                    k += 1;
                }
                out.push(EndContext {
                    at: i,
                    after_end: k,
                    next_tok: Some(j),
                });
            }
        }
        out
    }

    /// Sentence spans (char indices), as `span_tokenize` yields them.
    pub fn spans(&self, text: &str) -> Vec<(usize, usize)> {
        let chars: Vec<char> = text.chars().collect();
        let s = |a: usize, b: usize| -> String {
            if a < b {
                chars[a..b.min(chars.len())].iter().collect()
            } else {
                String::new()
            }
        };
        // Candidate contexts: the word before the end character, the character, what follows.
        let matches = Self::end_contexts(&chars);
        let mut contexts: Vec<(usize, String)> = Vec::new();
        let mut prev: Option<(usize, (usize, usize))> = None; // (match index, prev word slice)
        for (mi, m) in matches.iter().enumerate() {
            let (pstart, pstop) = prev.map(|p| p.1).unwrap_or((0, 0));
            let mut idx = 0;
            if m.at > pstop {
                for k in (0..m.at - pstop).rev() {
                    if matches!(
                        chars[pstop + k],
                        ' ' | '\t' | '\n' | '\r' | '\u{0B}' | '\u{0C}'
                    ) {
                        idx = k;
                        break;
                    }
                }
            }
            let start = if idx != 0 { idx + pstop + 1 } else { pstart };
            let slice = (start, m.at);
            if let Some((pm, ps)) = prev
                && ps.1 <= slice.0
            {
                let pmm = &matches[pm];
                contexts.push((pm, s(ps.0, ps.1) + &s(pmm.at, pmm.after_end)));
            }
            prev = Some((mi, slice));
        }
        if let Some((pm, ps)) = prev {
            let pmm = &matches[pm];
            contexts.push((pm, s(ps.0, ps.1) + &s(pmm.at, pmm.after_end)));
        }
        let mut slices = Vec::new();
        let mut last_break = 0;
        for (mi, ctx) in contexts {
            if self.contains_sentbreak(&ctx) {
                let m = &matches[mi];
                slices.push((last_break, m.at + 1));
                last_break = m.next_tok.unwrap_or(m.at + 1);
            }
        }
        slices.push((last_break, py::rstrip(text).chars().count()));
        // Realign: closing quotes/brackets after a boundary belong to the sentence before.
        let mut out = Vec::new();
        let mut realign = 0;
        for i in 0..slices.len() {
            let s1 = (slices[i].0 + realign, slices[i].1);
            let Some(&s2) = slices.get(i + 1) else {
                if s1.0 < s1.1 {
                    out.push(s1);
                }
                continue;
            };
            match realignment(&chars, s2) {
                Some((kept, end)) => {
                    out.push((s1.0, s2.0 + kept));
                    realign = end;
                }
                None => {
                    realign = 0;
                    if s1.0 < s1.1 {
                        out.push(s1);
                    }
                }
            }
        }
        out
    }

    /// Number of sentences (`len(tokenizer.tokenize(text))`).
    pub fn count(&self, text: &str) -> usize {
        self.spans(text).len()
    }

    /// The sentences themselves.
    pub fn sentences(&self, text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        self.spans(text)
            .into_iter()
            .map(|(a, b)| chars[a..b.min(chars.len())].iter().collect())
            .collect()
    }
}

/// Length of Punkt's `MultiChar` (`-{2,}`, `\.{2,}`, `(\.\s){2,}\.`) at `i`, if any.
fn multi_char(c: &[char], i: usize) -> Option<usize> {
    let run = |ch: char| c[i..].iter().take_while(|&&x| x == ch).count();
    if run('-') >= 2 {
        return Some(run('-'));
    }
    if run('.') >= 2 {
        return Some(run('.'));
    }
    // Greedy `(\.\s){2,}` with backtracking to a final `.`.
    let mut pairs = 0;
    while i + 2 * pairs + 1 < c.len()
        && c[i + 2 * pairs] == '.'
        && py::is_space(c[i + 2 * pairs + 1])
    {
        pairs += 1;
    }
    (2..=pairs)
        .rev()
        .find(|&r| c.get(i + 2 * r) == Some(&'.'))
        .map(|r| 2 * r + 1)
}

/// Punkt's end-of-word lookahead at `j`: whitespace, the end, other punctuation, a
/// `MultiChar`, or a comma followed by one of those.
fn word_end(c: &[char], j: usize) -> bool {
    let plain = |j: usize| {
        j >= c.len() || py::is_space(c[j]) || is_non_word(c[j]) || multi_char(c, j).is_some()
    };
    plain(j) || (c[j] == ',' && plain(j + 1))
}

/// Punkt's word tokenizer (`PunktLanguageVars.word_tokenize`) on one line: char spans.
fn word_spans(c: &[char]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if py::is_space(c[i]) {
            i += 1;
            continue;
        }
        if let Some(n) = multi_char(c, i) {
            out.push((i, i + n));
            i += n;
            continue;
        }
        let end = if "(\"`{[:;&#*@)}]-,".contains(c[i]) {
            i + 1
        } else {
            let mut j = i + 1;
            while !word_end(c, j) {
                j += 1;
            }
            j
        };
        out.push((i, end));
        i = end;
    }
    out
}

/// `["\')\]}]+?(?:\s+|(?=--)|$)` (MULTILINE) matched at the start of `slice`: the length of
/// the match with trailing whitespace removed, and its full length.
fn realignment(chars: &[char], (a, b): (usize, usize)) -> Option<(usize, usize)> {
    let t: &[char] = if a < b {
        &chars[a..b.min(chars.len())]
    } else {
        &[]
    };
    let closing = |c: char| matches!(c, '"' | '\'' | ')' | ']' | '}');
    let mut k = 0;
    while k < t.len() && closing(t[k]) {
        k += 1;
        // After k closing characters: whitespace, "--" ahead, or end of line/slice.
        if k < t.len() && py::is_space(t[k]) {
            let mut e = k;
            while e < t.len() && py::is_space(t[e]) {
                e += 1;
            }
            return Some((k, e));
        }
        if t.get(k) == Some(&'-') && t.get(k + 1) == Some(&'-') || k == t.len() || t[k] == '\n' {
            return Some((k, k));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_nltk() {
        let p = &*ENGLISH;
        assert_eq!(p.count("Hello Mr. Smith. How are you? I am fine."), 3);
        assert_eq!(
            p.sentences("He said \"stop.\" Then he left... And J. R. R. Tolkien wrote it."),
            vec![
                "He said \"stop.\"",
                "Then he left... And J. R. R. Tolkien wrote it."
            ]
        );
        assert_eq!(p.count(""), 0);
        assert_eq!(p.count("no end here"), 1);
    }
}
