//! Print what the reimplemented text tools make of each JSON string on stdin (one per line):
//! `[sentences, capital words, language]`. scripts/ifeval_parity.py compares it with nltk
//! and langdetect.
use std::io::BufRead;

fn main() {
    for line in std::io::stdin().lock().lines() {
        let text: String = serde_json::from_str(&line.unwrap()).unwrap();
        let caps = ifeval::treebank::word_tokenize(&text)
            .iter()
            .filter(|w| ifeval::py::is_upper(w))
            .count();
        let out = serde_json::json!([
            ifeval::punkt::ENGLISH.count(&text),
            caps,
            ifeval::langdetect::detect(&text)
        ]);
        println!("{out}");
    }
}
