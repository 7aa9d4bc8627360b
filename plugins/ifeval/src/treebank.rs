//! nltk's `word_tokenize`: Punkt sentences, each split by the improved Treebank tokenizer
//! (`NLTKWordTokenizer`): quotes, punctuation, brackets, dashes and contractions.

use std::sync::OnceLock;

use fancy_regex::Regex;

use crate::{punkt, py};

/// One substitution: compiled on first use, tried only when the text has what it needs
/// (a compile per rule is most of the cost on short texts).
struct Rule {
    pattern: &'static str,
    replace: &'static str,
    /// Characters of which the text must contain at least one ("" = always).
    any_of: &'static str,
    /// A word the text must contain, ignoring case.
    word: Option<&'static str>,
    re: OnceLock<Regex>,
}

const fn rule(pattern: &'static str, replace: &'static str, any_of: &'static str) -> Rule {
    Rule {
        pattern,
        replace,
        any_of,
        word: None,
        re: OnceLock::new(),
    }
}

const fn word_rule(pattern: &'static str, word: &'static str) -> Rule {
    Rule {
        pattern,
        replace: " $1 $2 ",
        any_of: "",
        word: Some(word),
        re: OnceLock::new(),
    }
}

static STARTING_QUOTES: [Rule; 5] = [
    rule("([«“‘„]|[`]+)", " $1 ", "«“‘„`"),
    rule(r#"^""#, "``", "\""),
    rule("(``)", " $1 ", "`"),
    rule(r#"([ \(\[{<])("|'{2})"#, "$1 `` ", "\"'"),
    rule(r"(?i)(')(?!re|ve|ll|m|t|s|d|n)(\w)\b", "$1 $2", "'"),
];

static PUNCTUATION: [Rule; 11] = [
    rule(r#"([^\.])(\.)([\]\)}>"'»”’ ]*)\s*$"#, "$1 $2 $3 ", "."),
    rule(r"([:,])([^\d])", " $1 $2", ":,"),
    rule(r"([:,])$", " $1 ", ":,"),
    rule(r"\.{2,}", " $0 ", "."),
    rule(r"[;@#$%&]", " $0 ", ";@#$%&"),
    rule(r#"([^\.])(\.)([\]\)}>"']*)\s*$"#, "$1 $2$3 ", "."),
    rule(r"[?!]", " $0 ", "?!"),
    rule(r"([^'])' ", "$1 ' ", "'"),
    rule(r"[*]", " $0 ", "*"),
    rule(r"[\]\[\(\)\{\}<>]", " $0 ", "[](){}<>"),
    rule(r"--", " -- ", "-"),
];

static ENDING_QUOTES: [Rule; 16] = [
    rule("([»”’])", " $1 ", "»”’"),
    rule("''", " '' ", "'"),
    rule("\"", " '' ", "\""),
    rule(r"\s+", " ", ""),
    rule(r"([^' ])('[sS]|'[mM]|'[dD]|') ", "$1 $2 ", "'"),
    rule(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", "$1 $2 ", "'"),
    word_rule(r"(?i)\b(can)(not)\b", "cannot"),
    word_rule(r"(?i)\b(d)('ye)\b", "d'ye"),
    word_rule(r"(?i)\b(gim)(me)\b", "gimme"),
    word_rule(r"(?i)\b(gon)(na)\b", "gonna"),
    word_rule(r"(?i)\b(got)(ta)\b", "gotta"),
    word_rule(r"(?i)\b(lem)(me)\b", "lemme"),
    word_rule(r"(?i)\b(more)('n)\b", "more'n"),
    word_rule(r"(?i)\b(wan)(na)(?=\s)", "wanna"),
    word_rule(r"(?i) ('t)(is)\b", "'tis"),
    word_rule(r"(?i) ('t)(was)\b", "'twas"),
];

fn apply(rules: &[Rule], mut text: String) -> String {
    let mut lower: Option<String> = None;
    for r in rules {
        if !r.any_of.is_empty() && !text.contains(|c| r.any_of.contains(c)) {
            continue;
        }
        if let Some(w) = r.word {
            // Case folding never removes a match: a word absent from the lowered text is
            // absent; `replace` of earlier rules only adds spaces around punctuation.
            let l = lower.get_or_insert_with(|| text.to_lowercase());
            if !l.contains(w) {
                continue;
            }
        }
        let re = r
            .re
            .get_or_init(|| Regex::new(r.pattern).unwrap_or_else(|e| panic!("{}: {e}", r.pattern)));
        text = re.replace_all(&text, r.replace).into_owned();
    }
    text
}

/// Tokens of one sentence.
pub fn tokenize_sentence(sentence: &str) -> Vec<String> {
    let text = apply(&STARTING_QUOTES, sentence.to_string());
    let text = apply(&PUNCTUATION, text);
    let text = apply(&ENDING_QUOTES, format!(" {text} "));
    py::split_ws(&text).map(str::to_string).collect()
}

/// `nltk.word_tokenize(text)`.
pub fn word_tokenize(text: &str) -> Vec<String> {
    punkt::ENGLISH
        .sentences(text)
        .iter()
        .flat_map(|s| tokenize_sentence(s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_like_nltk() {
        assert_eq!(
            word_tokenize("I DON'T KNOW, U.S. is BIG."),
            ["I", "DO", "N'T", "KNOW", ",", "U.S.", "is", "BIG", "."]
        );
        assert_eq!(
            word_tokenize("\"Cannot\" he said (twice)."),
            [
                "``", "Can", "not", "''", "he", "said", "(", "twice", ")", "."
            ]
        );
    }
}
