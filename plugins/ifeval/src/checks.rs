//! The 25 IFEval instruction types: kwargs validation, `check_following`, and the strict and
//! loose evaluation of the reference harness.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use fancy_regex::Regex;
use serde_json::{Map, Value};

use crate::{langdetect, punkt, py, treebank};

pub type Kwargs = Map<String, Value>;

/// Why an instruction could not be checked (reported per instruction, never a crash).
#[derive(Debug, PartialEq)]
pub enum CheckError {
    UnknownId(String),
    BadKwargs(String),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rel {
    LessThan,
    AtLeast,
}

impl Rel {
    fn holds(self, n: usize, t: i64) -> bool {
        match self {
            Rel::LessThan => (n as i64) < t,
            Rel::AtLeast => (n as i64) >= t,
        }
    }
}

/// A built instruction, ready to check responses.
pub enum Instruction {
    Keywords(Vec<Keyword>),
    KeywordFrequency(Keyword, i64, Rel),
    ForbiddenWords(Vec<Bounded>),
    LetterFrequency(String, i64, Rel),
    ResponseLanguage(String),
    NumberSentences(i64, Rel),
    NumberParagraphs(i64),
    NumberWords(i64, Rel),
    NthParagraphFirstWord { num: i64, nth: i64, word: String },
    Placeholders(i64),
    Postscript(Regex),
    BulletLists(i64),
    ConstrainedResponse,
    Highlights(i64),
    Sections(Regex, i64),
    JsonFormat,
    Title,
    TwoResponses,
    RepeatPrompt(String),
    EndChecker(String),
    CapitalWordFrequency(i64, Rel),
    EnglishCapital,
    EnglishLowercase,
    NoComma,
    Quotation,
}

/// Every id, its one-line description and the JSON Schema of its kwargs.
pub const SPECS: &[(&str, &str, &str)] = &[
    (
        "keywords:existence",
        "Include the given keywords",
        r#"{"type":"object","properties":{"keywords":{"type":"array","items":{"type":"string"}}},"required":["keywords"]}"#,
    ),
    (
        "keywords:frequency",
        "A word appears less than / at least N times",
        r#"{"type":"object","properties":{"keyword":{"type":"string"},"frequency":{"type":"integer"},"relation":{"enum":["less than","at least"]}},"required":["keyword","frequency","relation"]}"#,
    ),
    (
        "keywords:forbidden_words",
        "Do not use the given words",
        r#"{"type":"object","properties":{"forbidden_words":{"type":"array","items":{"type":"string"}}},"required":["forbidden_words"]}"#,
    ),
    (
        "keywords:letter_frequency",
        "A letter appears less than / at least N times",
        r#"{"type":"object","properties":{"letter":{"type":"string","minLength":1,"maxLength":1},"let_frequency":{"type":"integer"},"let_relation":{"enum":["less than","at least"]}},"required":["letter","let_frequency","let_relation"]}"#,
    ),
    (
        "language:response_language",
        "The whole response in the given language (ISO 639-1)",
        r#"{"type":"object","properties":{"language":{"type":"string"}},"required":["language"]}"#,
    ),
    (
        "length_constraints:number_sentences",
        "Less than / at least N sentences",
        r#"{"type":"object","properties":{"num_sentences":{"type":"integer"},"relation":{"enum":["less than","at least"]}},"required":["num_sentences","relation"]}"#,
    ),
    (
        "length_constraints:number_paragraphs",
        "Exactly N paragraphs separated by ***",
        r#"{"type":"object","properties":{"num_paragraphs":{"type":"integer"}},"required":["num_paragraphs"]}"#,
    ),
    (
        "length_constraints:number_words",
        "Less than / at least N words",
        r#"{"type":"object","properties":{"num_words":{"type":"integer"},"relation":{"enum":["less than","at least"]}},"required":["num_words","relation"]}"#,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        "N paragraphs separated by blank lines; paragraph i starts with a word",
        r#"{"type":"object","properties":{"num_paragraphs":{"type":"integer"},"nth_paragraph":{"type":"integer"},"first_word":{"type":"string"}},"required":["num_paragraphs","nth_paragraph","first_word"]}"#,
    ),
    (
        "detectable_content:number_placeholders",
        "At least N [placeholders]",
        r#"{"type":"object","properties":{"num_placeholders":{"type":"integer"}},"required":["num_placeholders"]}"#,
    ),
    (
        "detectable_content:postscript",
        "End with a postscript starting with a marker",
        r#"{"type":"object","properties":{"postscript_marker":{"type":"string"}},"required":["postscript_marker"]}"#,
    ),
    (
        "detectable_format:number_bullet_lists",
        "Exactly N markdown bullet points",
        r#"{"type":"object","properties":{"num_bullets":{"type":"integer"}},"required":["num_bullets"]}"#,
    ),
    (
        "detectable_format:constrained_response",
        "Answer with one of: My answer is yes./no./maybe.",
        r#"{"type":"object"}"#,
    ),
    (
        "detectable_format:number_highlighted_sections",
        "At least N *highlighted* sections",
        r#"{"type":"object","properties":{"num_highlights":{"type":"integer"}},"required":["num_highlights"]}"#,
    ),
    (
        "detectable_format:multiple_sections",
        "At least N sections marked `SPLITTER X`",
        r#"{"type":"object","properties":{"section_spliter":{"type":"string"},"num_sections":{"type":"integer"}},"required":["section_spliter","num_sections"]}"#,
    ),
    (
        "detectable_format:json_format",
        "The whole output is JSON (markdown fences allowed)",
        r#"{"type":"object"}"#,
    ),
    (
        "detectable_format:title",
        "A title in double angular brackets <<...>>",
        r#"{"type":"object"}"#,
    ),
    (
        "combination:two_responses",
        "Two different responses separated by ******",
        r#"{"type":"object"}"#,
    ),
    (
        "combination:repeat_prompt",
        "Repeat the request word for word, then answer",
        r#"{"type":"object","properties":{"prompt_to_repeat":{"type":"string"}}}"#,
    ),
    (
        "startend:end_checker",
        "End with an exact phrase",
        r#"{"type":"object","properties":{"end_phrase":{"type":"string"}},"required":["end_phrase"]}"#,
    ),
    (
        "change_case:capital_word_frequency",
        "Words in all capitals appear less than / at least N times",
        r#"{"type":"object","properties":{"capital_frequency":{"type":"integer"},"capital_relation":{"enum":["less than","at least"]}},"required":["capital_frequency","capital_relation"]}"#,
    ),
    (
        "change_case:english_capital",
        "English, all capital letters",
        r#"{"type":"object"}"#,
    ),
    (
        "change_case:english_lowercase",
        "English, all lowercase letters",
        r#"{"type":"object"}"#,
    ),
    ("punctuation:no_comma", "No commas", r#"{"type":"object"}"#),
    (
        "startend:quotation",
        "Wrap the whole response in double quotation marks",
        r#"{"type":"object"}"#,
    ),
];

/// The kwargs each id accepts (the reference raises on any other).
fn allowed(id: &str) -> &'static [&'static str] {
    match id {
        "keywords:existence" => &["keywords"],
        "keywords:frequency" => &["keyword", "frequency", "relation"],
        "keywords:forbidden_words" => &["forbidden_words"],
        "keywords:letter_frequency" => &["letter", "let_frequency", "let_relation"],
        "language:response_language" => &["language"],
        "length_constraints:number_sentences" => &["num_sentences", "relation"],
        "length_constraints:number_paragraphs" => &["num_paragraphs"],
        "length_constraints:number_words" => &["num_words", "relation"],
        "length_constraints:nth_paragraph_first_word" => {
            &["num_paragraphs", "nth_paragraph", "first_word"]
        }
        "detectable_content:number_placeholders" => &["num_placeholders"],
        "detectable_content:postscript" => &["postscript_marker"],
        "detectable_format:number_bullet_lists" => &["num_bullets"],
        "detectable_format:number_highlighted_sections" => &["num_highlights"],
        "detectable_format:multiple_sections" => &["section_spliter", "num_sections"],
        "combination:repeat_prompt" => &["prompt_to_repeat"],
        "startend:end_checker" => &["end_phrase"],
        "change_case:capital_word_frequency" => &["capital_frequency", "capital_relation"],
        _ => &[],
    }
}

fn bad(msg: impl Into<String>) -> CheckError {
    CheckError::BadKwargs(msg.into())
}

fn int(k: &Kwargs, name: &str) -> Result<i64, CheckError> {
    match k.get(name) {
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| bad(format!("`{name}` must be an integer, got {v}"))),
        None => Err(bad(format!("missing `{name}`"))),
    }
}

/// A count the reference would replace by a random one when negative: refused here.
fn count(k: &Kwargs, name: &str) -> Result<i64, CheckError> {
    let n = int(k, name)?;
    if n < 0 {
        return Err(bad(format!("`{name}` must not be negative")));
    }
    Ok(n)
}

fn string<'a>(k: &'a Kwargs, name: &str) -> Result<&'a str, CheckError> {
    match k.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(bad(format!("`{name}` must be a string, got {v}"))),
        None => Err(bad(format!("missing `{name}`"))),
    }
}

fn strings(k: &Kwargs, name: &str) -> Result<Vec<String>, CheckError> {
    match k.get(name) {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(format!("`{name}` must be a list of strings"))),
        Some(_) => Err(bad(format!("`{name}` must be a non-empty list of strings"))),
        None => Err(bad(format!("missing `{name}`"))),
    }
}

fn relation(k: &Kwargs, name: &str) -> Result<Rel, CheckError> {
    match string(k, name)? {
        "less than" => Ok(Rel::LessThan),
        "at least" => Ok(Rel::AtLeast),
        r => Err(bad(format!(
            "`{name}` must be \"less than\" or \"at least\", got {r:?}"
        ))),
    }
}

/// Compiled patterns, kept across calls: IFEval's patterns repeat (markers, splitters).
static PATTERNS: LazyLock<Mutex<HashMap<String, Regex>>> = LazyLock::new(Default::default);

fn pattern(p: &str, case_insensitive: bool, multi_line: bool) -> Result<Regex, CheckError> {
    let flags = match (case_insensitive, multi_line) {
        (true, true) => "(?im)",
        (true, false) => "(?i)",
        (false, true) => "(?m)",
        (false, false) => "",
    };
    let full = format!("{flags}{p}");
    let mut cache = PATTERNS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(re) = cache.get(&full) {
        return Ok(re.clone());
    }
    let re = Regex::new(&full).map_err(|e| bad(format!("pattern {p:?}: {e}")))?;
    if cache.len() < 4096 {
        cache.insert(full, re.clone());
    }
    Ok(re)
}

/// A keyword searched case-insensitively, as `re.search(keyword, text, re.IGNORECASE)`:
/// plain words (the usual case) by a direct scan, anything with regex syntax by a regex.
pub enum Keyword {
    Plain(Vec<char>),
    Pattern(Regex),
}

fn fold(c: char) -> char {
    let mut l = c.to_lowercase();
    match (l.next(), l.next()) {
        (Some(x), None) => x,
        _ => c,
    }
}

impl Keyword {
    fn new(p: &str) -> Result<Keyword, CheckError> {
        if !p.is_empty() && !p.chars().any(|c| ".^$*+?{}[]\\|()".contains(c)) {
            Ok(Keyword::Plain(p.chars().map(fold).collect()))
        } else {
            Ok(Keyword::Pattern(pattern(p, true, false)?))
        }
    }

    /// Byte ranges of the non-overlapping matches, left to right.
    fn matches(&self, text: &str) -> Vec<(usize, usize)> {
        match self {
            Keyword::Pattern(re) => re
                .find_iter(text)
                .filter_map(Result::ok)
                .map(|m| (m.start(), m.end()))
                .collect(),
            Keyword::Plain(w) => {
                let chars: Vec<(usize, char)> = text.char_indices().collect();
                let mut out = Vec::new();
                let mut i = 0;
                while i + w.len() <= chars.len() {
                    if chars[i..i + w.len()]
                        .iter()
                        .zip(w)
                        .all(|(&(_, c), &k)| fold(c) == k)
                    {
                        let end = chars.get(i + w.len()).map_or(text.len(), |&(b, _)| b);
                        out.push((chars[i].0, end));
                        i += w.len();
                    } else {
                        i += 1;
                    }
                }
                out
            }
        }
    }

    fn found(&self, text: &str) -> bool {
        match self {
            Keyword::Pattern(re) => re.is_match(text).unwrap_or(false),
            Keyword::Plain(_) => !self.matches(text).is_empty(),
        }
    }
}

/// The instruction sentence of `combination:repeat_prompt`.
pub const REPEAT_TEXT: &str = "First repeat the request word for word without change, then give your answer (1. do not say any words or characters before repeating the request; 2. the request you need to repeat does not include this sentence)";

/// `re.search(r"\b" + word + r"\b", text, re.IGNORECASE)` with Python's `\b` (between its
/// `\w` and `\W`): every match start of the word is tried, and the boundaries are checked
/// by hand; lookarounds in a backtracking engine were 30x slower.
pub struct Bounded {
    word: String,
    plain: Option<Keyword>,
}

/// Python's `\b` as lookarounds (the path for words with regex syntax).
const PY_B: &str = r"(?:(?<=[\p{L}\p{N}_])(?![\p{L}\p{N}_])|(?<![\p{L}\p{N}_])(?=[\p{L}\p{N}_]))";

impl Bounded {
    fn new(word: &str) -> Result<Bounded, CheckError> {
        let plain = match Keyword::new(word)? {
            k @ Keyword::Plain(_) => Some(k),
            Keyword::Pattern(_) => {
                Self::slow(word)?;
                None
            }
        };
        Ok(Bounded {
            word: word.to_string(),
            plain,
        })
    }

    fn slow(word: &str) -> Result<Regex, CheckError> {
        pattern(&format!("{PY_B}{word}{PY_B}"), true, false)
    }

    fn boundary(text: &str, at: usize) -> bool {
        let before = text[..at].chars().next_back().is_some_and(py::is_word);
        let after = text[at..].chars().next().is_some_and(py::is_word);
        before != after
    }

    fn found(&self, text: &str) -> bool {
        let Some(Keyword::Plain(w)) = &self.plain else {
            return Self::slow(&self.word).is_ok_and(|re| re.is_match(text).unwrap_or(false));
        };
        // Every start, overlapping ones included (a failed boundary does not consume).
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        (0..chars.len().saturating_sub(w.len() - 1)).any(|i| {
            i + w.len() <= chars.len()
                && chars[i..i + w.len()]
                    .iter()
                    .zip(w)
                    .all(|(&(_, c), &k)| fold(c) == k)
                && Self::boundary(text, chars[i].0)
                && Self::boundary(text, chars.get(i + w.len()).map_or(text.len(), |&(b, _)| b))
        })
    }
}

impl Instruction {
    /// `build_description(**kwargs)` with the reference's validation; what the reference
    /// would fill in at random (missing or out-of-range values) is an error here.
    pub fn build(id: &str, k: &Kwargs, prompt: &str) -> Result<Instruction, CheckError> {
        if !SPECS.iter().any(|(s, _, _)| *s == id) {
            return Err(CheckError::UnknownId(id.to_string()));
        }
        if let Some(extra) = k.keys().find(|key| !allowed(id).contains(&key.as_str())) {
            return Err(bad(format!("unexpected kwarg `{extra}`")));
        }
        use Instruction as I;
        Ok(match id {
            "keywords:existence" => I::Keywords(
                strings(k, "keywords")?
                    .iter()
                    .map(|w| Keyword::new(w))
                    .collect::<Result<_, _>>()?,
            ),
            "keywords:frequency" => I::KeywordFrequency(
                Keyword::new(py::strip(string(k, "keyword")?))?,
                count(k, "frequency")?,
                relation(k, "relation")?,
            ),
            "keywords:forbidden_words" => I::ForbiddenWords(
                strings(k, "forbidden_words")?
                    .iter()
                    .map(|w| Bounded::new(w))
                    .collect::<Result<_, _>>()?,
            ),
            "keywords:letter_frequency" => {
                let l = string(k, "letter")?;
                let mut cs = l.chars();
                // The reference swaps anything but an ASCII letter (IFEval asks for `#` and
                // `!`) for a random letter from the unseeded global `random`: its verdict
                // there is noise. Here the character asked for is counted.
                if !matches!((cs.next(), cs.next()), (Some(_), None)) {
                    return Err(bad(format!("`letter` must be one character, got {l:?}")));
                }
                I::LetterFrequency(
                    l.to_lowercase(),
                    count(k, "let_frequency")?,
                    relation(k, "let_relation")?,
                )
            }
            "language:response_language" => {
                // A code no profile has simply never matches, as in the reference.
                I::ResponseLanguage(string(k, "language")?.to_string())
            }
            "length_constraints:number_sentences" => {
                I::NumberSentences(count(k, "num_sentences")?, relation(k, "relation")?)
            }
            "length_constraints:number_paragraphs" => {
                I::NumberParagraphs(count(k, "num_paragraphs")?)
            }
            "length_constraints:number_words" => {
                I::NumberWords(count(k, "num_words")?, relation(k, "relation")?)
            }
            "length_constraints:nth_paragraph_first_word" => {
                let num = count(k, "num_paragraphs")?;
                let nth = int(k, "nth_paragraph")?;
                if nth <= 0 || nth > num {
                    return Err(bad(format!(
                        "`nth_paragraph` must be in 1..={num}, got {nth}"
                    )));
                }
                I::NthParagraphFirstWord {
                    num,
                    nth,
                    word: py::lower(string(k, "first_word")?),
                }
            }
            "detectable_content:number_placeholders" => {
                I::Placeholders(count(k, "num_placeholders")?)
            }
            "detectable_content:postscript" => {
                let m = py::strip(string(k, "postscript_marker")?);
                let p = match m {
                    "P.P.S" => r"\s*p\.\s?p\.\s?s.*$".to_string(),
                    "P.S." => r"\s*p\.\s?s\..*$".to_string(),
                    _ => format!(r"\s*{}.*$", py::lower(m)),
                };
                I::Postscript(pattern(&p, false, true)?)
            }
            "detectable_format:number_bullet_lists" => I::BulletLists(count(k, "num_bullets")?),
            "detectable_format:constrained_response" => I::ConstrainedResponse,
            "detectable_format:number_highlighted_sections" => {
                I::Highlights(count(k, "num_highlights")?)
            }
            "detectable_format:multiple_sections" => {
                let s = py::strip(string(k, "section_spliter")?);
                I::Sections(
                    pattern(&format!(r"\s?{s}\s?\d+\s?"), false, false)?,
                    count(k, "num_sections")?,
                )
            }
            "detectable_format:json_format" => I::JsonFormat,
            "detectable_format:title" => I::Title,
            "combination:two_responses" => I::TwoResponses,
            "combination:repeat_prompt" => {
                // Without `prompt_to_repeat` (an instance drawn by `instantiate`), the request
                // is the prompt itself, less the instruction sentence appended to it.
                let p = match k.get("prompt_to_repeat") {
                    None | Some(Value::Null) => "",
                    Some(_) => string(k, "prompt_to_repeat")?,
                };
                let p = if p.is_empty() {
                    prompt.split(REPEAT_TEXT).next().unwrap_or(prompt)
                } else {
                    p
                };
                if py::strip(p).is_empty() {
                    return Err(bad("`prompt_to_repeat` must be set"));
                }
                I::RepeatPrompt(py::lower(py::strip(p)))
            }
            "startend:end_checker" => I::EndChecker(py::lower(py::strip(string(k, "end_phrase")?))),
            "change_case:capital_word_frequency" => I::CapitalWordFrequency(
                int(k, "capital_frequency")?,
                relation(k, "capital_relation")?,
            ),
            "change_case:english_capital" => I::EnglishCapital,
            "change_case:english_lowercase" => I::EnglishLowercase,
            "punctuation:no_comma" => I::NoComma,
            "startend:quotation" => I::Quotation,
            _ => return Err(CheckError::UnknownId(id.to_string())),
        })
    }

    /// `check_following(value)`.
    pub fn follows(&self, value: &str) -> bool {
        use Instruction as I;
        let found = |re: &Regex, s: &str| re.is_match(s).unwrap_or(false);
        let n_found = |re: &Regex, s: &str| re.find_iter(s).filter(Result::is_ok).count();
        match self {
            I::Keywords(ks) => ks.iter().all(|k| k.found(value)),
            I::KeywordFrequency(k, n, rel) => rel.holds(k.matches(value).len(), *n),
            I::ForbiddenWords(words) => !words.iter().any(|w| w.found(value)),
            I::LetterFrequency(l, n, rel) => {
                let low = py::lower(value);
                let c = l.chars().next().unwrap();
                rel.holds(low.chars().filter(|&x| x == c).count(), *n)
            }
            I::ResponseLanguage(l) => langdetect::detect(value).is_none_or(|d| d == *l),
            I::NumberSentences(n, rel) => rel.holds(punkt::ENGLISH.count(value), *n),
            I::NumberParagraphs(n) => {
                let parts: Vec<&str> = PARAGRAPH_SPLIT
                    .split(value)
                    .filter_map(Result::ok)
                    .collect();
                let mut num = parts.len() as i64;
                for (i, p) in parts.iter().enumerate() {
                    if py::strip(p).is_empty() {
                        if i == 0 || i == parts.len() - 1 {
                            num -= 1;
                        } else {
                            return false;
                        }
                    }
                }
                num == *n
            }
            I::NumberWords(n, rel) => rel.holds(py::count_words(value), *n),
            I::NthParagraphFirstWord { num, nth, word } => {
                let parts: Vec<&str> = value.split("\n\n").collect();
                let count = parts.iter().filter(|p| !py::strip(p).is_empty()).count() as i64;
                if *nth > count {
                    return false;
                }
                let p = py::strip(parts[(*nth - 1) as usize]);
                if p.is_empty() {
                    return false;
                }
                let w = py::strip(py::split_ws(p).next().unwrap_or(""));
                let w = w.trim_start_matches('\'').trim_start_matches('"');
                let mut first = String::new();
                for c in w.chars() {
                    if matches!(c, '.' | ',' | '?' | '!' | '\'' | '"') {
                        break;
                    }
                    first.extend(c.to_lowercase());
                }
                count == *num && first == *word
            }
            I::Placeholders(n) => n_found(&PLACEHOLDER, value) as i64 >= *n,
            I::Postscript(re) => found(re, &py::lower(value)),
            I::BulletLists(n) => {
                (n_found(&BULLET_STAR, value) + n_found(&BULLET_DASH, value)) as i64 == *n
            }
            I::ConstrainedResponse => {
                let v = py::strip(value);
                [
                    "My answer is yes.",
                    "My answer is no.",
                    "My answer is maybe.",
                ]
                .iter()
                .any(|o| v.contains(o))
            }
            I::Highlights(n) => {
                let single = HIGHLIGHT
                    .find_iter(value)
                    .filter_map(Result::ok)
                    .filter(|m| !py::strip(m.as_str().trim_matches('*')).is_empty())
                    .count();
                let double = DOUBLE_HIGHLIGHT
                    .find_iter(value)
                    .filter_map(Result::ok)
                    .filter(|m| {
                        let s = m.as_str();
                        !py::strip(&s[2..s.len() - 2]).is_empty()
                    })
                    .count();
                (single + double) as i64 >= *n
            }
            I::Sections(re, n) => n_found(re, value) as i64 >= *n,
            I::JsonFormat => {
                let mut v = py::strip(value);
                for p in ["```json", "```Json", "```JSON", "```"] {
                    v = v.strip_prefix(p).unwrap_or(v);
                }
                v = v.strip_suffix("```").unwrap_or(v);
                py::json_loads_ok(py::strip(v))
            }
            I::Title => TITLE.find_iter(value).filter_map(Result::ok).any(|m| {
                !py::strip(m.as_str().trim_start_matches('<').trim_end_matches('>')).is_empty()
            }),
            I::TwoResponses => {
                let parts: Vec<&str> = value.split("******").collect();
                let mut valid = Vec::new();
                for (i, p) in parts.iter().enumerate() {
                    if py::strip(p).is_empty() {
                        if i != 0 && i != parts.len() - 1 {
                            return false;
                        }
                    } else {
                        valid.push(*p);
                    }
                }
                valid.len() == 2 && py::strip(valid[0]) != py::strip(valid[1])
            }
            I::RepeatPrompt(p) => py::lower(py::strip(value)).starts_with(p.as_str()),
            I::EndChecker(e) => py::lower(py::strip(value).trim_matches('"')).ends_with(e.as_str()),
            I::CapitalWordFrequency(n, rel) => {
                let caps = treebank::word_tokenize(value)
                    .iter()
                    .filter(|w| py::is_upper(w))
                    .count();
                rel.holds(caps, *n)
            }
            I::EnglishCapital => {
                py::is_upper(value) && langdetect::detect(value).is_none_or(|d| d == "en")
            }
            I::EnglishLowercase => {
                py::is_lower(value) && langdetect::detect(value).is_none_or(|d| d == "en")
            }
            I::NoComma => !value.contains(','),
            I::Quotation => {
                let v = py::strip(value);
                v.chars().count() > 1 && v.starts_with('"') && v.ends_with('"')
            }
        }
    }

    /// The reference harness: strict passes when the response is not blank and follows;
    /// loose when any of its eight variants does.
    pub fn evaluate(&self, response: &str) -> (bool, bool) {
        let ok = |r: &str| !py::strip(r).is_empty() && self.follows(r);
        let strict = ok(response);
        if strict {
            return (true, true);
        }
        let lines: Vec<&str> = response.split('\n').collect();
        let n = lines.len();
        let join = |a: usize, b: usize| py::strip(&lines[a.min(b)..b].join("\n")).to_string();
        let first = join(1, n);
        let last = join(0, n.saturating_sub(1));
        let both = join(1, n.saturating_sub(1));
        let unstar = |s: &str| s.replace('*', "");
        let variants = [
            unstar(response),
            first.clone(),
            last.clone(),
            both.clone(),
            unstar(&first),
            unstar(&last),
            unstar(&both),
        ];
        let mut seen: Vec<&str> = vec![response];
        for v in &variants {
            if seen.contains(&v.as_str()) {
                continue;
            }
            seen.push(v);
            if ok(v) {
                return (false, true);
            }
        }
        (false, false)
    }
}

fn re(p: &str) -> Regex {
    Regex::new(p).unwrap()
}

static PARAGRAPH_SPLIT: LazyLock<Regex> =
    LazyLock::new(|| re(&format!(r"[{s}]?\*\*\*[{s}]?", s = py::SPACE_CLASS)));
static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| re(r"\[.*?\]"));
static BULLET_STAR: LazyLock<Regex> =
    LazyLock::new(|| re(&format!(r"(?m)^[{s}]*\*[^\*].*$", s = py::SPACE_CLASS)));
static BULLET_DASH: LazyLock<Regex> =
    LazyLock::new(|| re(&format!(r"(?m)^[{s}]*-.*$", s = py::SPACE_CLASS)));
static HIGHLIGHT: LazyLock<Regex> = LazyLock::new(|| re(r"\*[^\n\*]*\*"));
static DOUBLE_HIGHLIGHT: LazyLock<Regex> = LazyLock::new(|| re(r"\*\*[^\n\*]*\*\*"));
static TITLE: LazyLock<Regex> = LazyLock::new(|| re(r"<<[^\n]+>>"));

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(id: &str, kw: Value, response: &str) -> (bool, bool) {
        let Value::Object(k) = kw else { panic!() };
        Instruction::build(id, &k, "").unwrap().evaluate(response)
    }

    #[test]
    fn counts_and_relations() {
        let w = |n| json!({"num_words": n, "relation": "at least"});
        assert_eq!(
            check("length_constraints:number_words", w(3), "one two three"),
            (true, true)
        );
        assert_eq!(
            check("length_constraints:number_words", w(4), "one two three"),
            (false, false)
        );
        let b = json!({"num_bullets": 2});
        assert!(
            check(
                "detectable_format:number_bullet_lists",
                b.clone(),
                "* a\n- b"
            )
            .0
        );
        assert!(!check("detectable_format:number_bullet_lists", b, "* a\n- b\n* c").0);
        let p = json!({"num_paragraphs": 2});
        assert!(
            check(
                "length_constraints:number_paragraphs",
                p.clone(),
                "a\n***\nb"
            )
            .0
        );
        assert!(!check("length_constraints:number_paragraphs", p, "a\n***\n***\nb").0);
    }

    #[test]
    fn loose_forgives_first_and_last_lines_and_stars() {
        let q = json!({});
        assert_eq!(
            check("startend:quotation", q, "Sure:\n\"quoted\""),
            (false, true)
        );
        let e = json!({"end_phrase": "Any other questions?"});
        assert_eq!(
            check("startend:end_checker", e, "x. **Any other questions?**"),
            (false, true)
        );
        assert_eq!(
            check("punctuation:no_comma", json!({}), "a, b"),
            (false, false)
        );
    }

    #[test]
    fn bad_kwargs_and_unknown_ids_are_errors() {
        let k = |v: Value| v.as_object().unwrap().clone();
        assert!(matches!(
            Instruction::build("nope:x", &k(json!({})), ""),
            Err(CheckError::UnknownId(_))
        ));
        assert!(matches!(
            Instruction::build(
                "length_constraints:number_words",
                &k(json!({"num_words": "ten", "relation": "at least"})),
                ""
            ),
            Err(CheckError::BadKwargs(_))
        ));
        assert!(matches!(
            Instruction::build(
                "keywords:frequency",
                &k(json!({"keyword": "a", "frequency": 2, "relation": "about"})),
                ""
            ),
            Err(CheckError::BadKwargs(_))
        ));
        assert!(matches!(
            Instruction::build("punctuation:no_comma", &k(json!({"extra": 1})), ""),
            Err(CheckError::BadKwargs(_))
        ));
    }

    /// One passing and one failing response (strict) for every type.
    #[test]
    fn every_type_passes_and_fails() {
        let cases: &[(&str, Value, &str, &str)] = &[
            (
                "keywords:existence",
                json!({"keywords": ["river", "Sea"]}),
                "The RIVER meets the sea.",
                "The river ends.",
            ),
            (
                "keywords:frequency",
                json!({"keyword": "rain", "frequency": 2, "relation": "at least"}),
                "Rain, rain, go away.",
                "Rain stops.",
            ),
            (
                "keywords:forbidden_words",
                json!({"forbidden_words": ["cat"]}),
                "Concatenate strings.",
                "A Cat sat.",
            ),
            (
                "keywords:letter_frequency",
                json!({"letter": "z", "let_frequency": 2, "let_relation": "less than"}),
                "Zebra.",
                "Zig zag.",
            ),
            (
                "language:response_language",
                json!({"language": "de"}),
                "Das ist ein kurzer Satz auf Deutsch, und er ist ganz einfach.",
                "This is a short sentence in English.",
            ),
            (
                "length_constraints:number_sentences",
                json!({"num_sentences": 2, "relation": "less than"}),
                "Hello Mr. Smith.",
                "One. Two. Three.",
            ),
            (
                "length_constraints:number_paragraphs",
                json!({"num_paragraphs": 2}),
                "a\n***\nb",
                "a\n***\nb\n***\nc",
            ),
            (
                "length_constraints:number_words",
                json!({"num_words": 3, "relation": "less than"}),
                "two words",
                "one two three",
            ),
            (
                "length_constraints:nth_paragraph_first_word",
                json!({"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"}),
                "First.\n\n\"Then, more.",
                "First.\n\nNow more.",
            ),
            (
                "detectable_content:number_placeholders",
                json!({"num_placeholders": 2}),
                "[name] at [address]",
                "[name] only",
            ),
            (
                "detectable_content:postscript",
                json!({"postscript_marker": "P.S."}),
                "Hi.\n\np.s. bye",
                "Hi. PS bye",
            ),
            (
                "detectable_format:number_bullet_lists",
                json!({"num_bullets": 1}),
                "* one",
                "* one\n* two",
            ),
            (
                "detectable_format:constrained_response",
                json!({}),
                "My answer is maybe.",
                "Maybe.",
            ),
            (
                "detectable_format:number_highlighted_sections",
                json!({"num_highlights": 2}),
                "*a* and **b**",
                "*a* and * *",
            ),
            (
                "detectable_format:multiple_sections",
                json!({"section_spliter": "Section", "num_sections": 2}),
                "Section 1\nx\nSection 2\ny",
                "Section 1\nx",
            ),
            (
                "detectable_format:json_format",
                json!({}),
                "```json\n{\"a\": 1}\n```",
                "{a: 1}",
            ),
            (
                "detectable_format:title",
                json!({}),
                "<<Joy>>\ntext",
                "<< >> text",
            ),
            (
                "combination:two_responses",
                json!({}),
                "one\n******\ntwo",
                "one\n******\none",
            ),
            (
                "combination:repeat_prompt",
                json!({"prompt_to_repeat": "Say hi."}),
                "say hi. Hi!",
                "Hi! Say hi.",
            ),
            (
                "startend:end_checker",
                json!({"end_phrase": "Bye now."}),
                "So long. \"Bye now.\"",
                "Bye now. Really.",
            ),
            (
                "change_case:capital_word_frequency",
                json!({"capital_frequency": 2, "capital_relation": "at least"}),
                "I DON'T know",
                "I know",
            ),
            (
                "change_case:english_capital",
                json!({}),
                "THIS IS ALL IN CAPITAL LETTERS.",
                "THIS IS mostly CAPITAL.",
            ),
            (
                "change_case:english_lowercase",
                json!({}),
                "this is all lowercase english text.",
                "this is Not.",
            ),
            (
                "punctuation:no_comma",
                json!({}),
                "no commas here",
                "one, two",
            ),
            ("startend:quotation", json!({}), "  \"quoted\"  ", "\"half"),
        ];
        assert_eq!(cases.len(), SPECS.len());
        for (id, kw, pass, fail) in cases {
            assert!(
                check(id, kw.clone(), pass).0,
                "{id} should pass on {pass:?}"
            );
            assert!(
                !check(id, kw.clone(), fail).0,
                "{id} should fail on {fail:?}"
            );
        }
        // Blank responses never pass, even where the check itself would.
        assert_eq!(
            check("punctuation:no_comma", json!({}), " \n "),
            (false, false)
        );
    }
}
