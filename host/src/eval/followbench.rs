//! FollowBench (Jiang et al., 2024): constraint levels 1–5 per category; HSR (all of a level's
//! constraints satisfied), SSR (share satisfied) and CSL (consecutive satisfied levels).
//!
//! As the official code scores them: the `example` category by template matching, the items
//! of 13 sources (and format items 22 and 30) by their rules, the rest by an LLM judge shown
//! the instruction at every level up to the item's and asked for a list of YES/NO, one per
//! added constraint. Per category and level, HSR and SSR are sums over the level's items
//! divided by the category's groups; levels and categories are averaged unweighted. A judge
//! answer that cannot be parsed counts as unsatisfied (the official code leaves it to be
//! fixed by hand) and is counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::mean;

/// The categories, in FollowBench's order; each is `DIR/{name}_constraints.json`.
pub const CATEGORIES: [&str; 6] = [
    "content",
    "situation",
    "style",
    "format",
    "example",
    "mixed",
];

/// Sources whose items are scored by rules.
pub const RULE_SOURCES: [&str; 13] = [
    "E2E",
    "WIKIEVENTS",
    "CONLL2003",
    "text_editing",
    "cnn_dailymail",
    "xsum",
    "samsum",
    "gigaword",
    "arxiv",
    "BBH_logical",
    "BBH_time",
    "self_made_space",
    "gsm_8k",
];

/// One instruction at one level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// The file's category (`mixed` for every mixed item).
    pub category: String,
    pub example_id: u64,
    pub level: u32,
    pub source: String,
    pub instruction: String,
    pub target: String,
    /// The group's instructions from level 0 to this one (the judge's view).
    #[serde(skip)]
    pub levels: Vec<String>,
}

/// How an item is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Example,
    Rule,
    Judge,
}

impl Item {
    pub fn method(&self) -> Method {
        if self.category == "example" {
            Method::Example
        } else if RULE_SOURCES.contains(&self.source.as_str())
            || (self.category == "format" && matches!(self.example_id, 22 | 30))
        {
            Method::Rule
        } else {
            Method::Judge
        }
    }
}

#[derive(Deserialize)]
struct Raw {
    example_id: u64,
    source: String,
    level: u32,
    instruction: String,
    #[serde(default)]
    target: String,
}

/// Read every category file of `dir` (the original FollowBench JSON), checking each record;
/// the items of levels 1–5 in file order. A file or record of the wrong shape is an error
/// naming it.
pub fn load(dir: &Path) -> anyhow::Result<Vec<Item>> {
    let mut items = Vec::new();
    for cat in CATEGORIES {
        let path = dir.join(format!("{cat}_constraints.json"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let Value::Array(rows) = v else {
            bail!("{}: expected a JSON array of records", path.display());
        };
        let mut raws = Vec::with_capacity(rows.len());
        for (i, r) in rows.into_iter().enumerate() {
            let raw: Raw = serde_json::from_value(r)
                .with_context(|| format!("{}: record {}", path.display(), i + 1))?;
            if raw.level > 5 {
                bail!(
                    "{}: record {}: level {} is not 0–5",
                    path.display(),
                    i + 1,
                    raw.level
                );
            }
            raws.push(raw);
        }
        // Each group's instructions by level, for the judge prompt.
        let mut groups: BTreeMap<u64, BTreeMap<u32, String>> = BTreeMap::new();
        for r in &raws {
            groups
                .entry(r.example_id)
                .or_default()
                .insert(r.level, r.instruction.clone());
        }
        for (i, r) in raws.iter().enumerate() {
            if r.level == 0 {
                continue;
            }
            let g = &groups[&r.example_id];
            let levels: Vec<String> = (0..=r.level)
                .map(|l| g.get(&l).cloned().unwrap_or_default())
                .collect();
            let item = Item {
                category: cat.to_string(),
                example_id: r.example_id,
                level: r.level,
                source: r.source.clone(),
                instruction: r.instruction.clone(),
                target: r.target.clone(),
                levels,
            };
            if item.method() == Method::Judge && !(0..r.level).all(|l| g.contains_key(&l)) {
                bail!(
                    "{}: record {}: group {} lacks a lower level the judge needs",
                    path.display(),
                    i + 1,
                    r.example_id
                );
            }
            if item.method() == Method::Example && !r.target.contains("{answer}") {
                bail!(
                    "{}: record {}: the template has no {{answer}}",
                    path.display(),
                    i + 1
                );
            }
            items.push(item);
        }
    }
    Ok(items)
}

// ---------------------------------------------------------------------------------------
// Rules (Python semantics of the official code)

fn re(p: &str) -> regex::Regex {
    regex::Regex::new(p).expect("valid pattern")
}

fn contain_word(g: &str, w: &str) -> bool {
    re(&format!(r"\b{}\b", regex::escape(w))).is_match(g)
}

/// `[s for s in re.split(r'[.!?]', g) if s]`
fn sentences(g: &str) -> Vec<&str> {
    g.split(['.', '!', '?']).filter(|s| !s.is_empty()).collect()
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// `len(g.split(' '))`
fn space_split(g: &str) -> usize {
    g.split(' ').count()
}

fn is_python_lower(g: &str) -> bool {
    g.chars().any(char::is_lowercase) && !g.chars().any(|c| c.is_uppercase())
}

fn last_match<'a>(pattern: &str, g: &'a str) -> Option<&'a str> {
    re(pattern).find_iter(g).last().map(|m| m.as_str())
}

const PUNCT: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// A Python list literal of strings (`['a', "b"]`), as `ast.literal_eval` reads it.
fn python_str_list(s: &str) -> Option<Vec<String>> {
    let s = s.trim();
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(q) = chars.next() else { break };
        if q != '\'' && q != '"' {
            return None;
        }
        let mut item = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => item.push('\n'),
                    't' => item.push('\t'),
                    c => item.push(c),
                },
                c if c == q => break,
                c => item.push(c),
            }
        }
        out.push(item);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some(',') => continue,
            Some(_) => return None,
        }
    }
    Some(out)
}

/// The rule of a rule-scored item: one verdict for all of its level's constraints.
pub fn rule(item: &Item, g: &str) -> bool {
    let t = item.target.as_str();
    let l = item.level;
    match item.source.as_str() {
        "E2E" | "text_editing" => g == t,
        "WIKIEVENTS" => {
            let allowed: Vec<&str> = t.split('\n').collect();
            g.split('\n').all(|line| allowed.contains(&line))
        }
        "CONLL2003" => python_str_list(t).is_some_and(|v| v.iter().any(|x| x == g)),
        "BBH_logical" => last_match(r"\([A-Z]\)", g) == Some(t),
        "BBH_time" => last_match(r"\d{2}/\d{2}/\d{4}", g) == Some(t),
        "gsm_8k" => last_match(r"\$\d+", g) == Some(t),
        "self_made_space" => g.contains(t),
        "cnn_dailymail" => {
            let s = sentences(g);
            let checks = [
                s.len() == 3,
                s.iter().all(|x| words(x) < 15),
                s.len() >= 3
                    && contain_word(s[0], "Potter")
                    && contain_word(s[1], "actor")
                    && contain_word(s[2], "films"),
                s.len() >= 2 && !contain_word(s[1], "lavish"),
                s.len() >= 3 && re(r"\b(has|have)\s+\w+").is_match(s[2]),
            ];
            checks[..l as usize].iter().all(|&c| c)
        }
        "xsum" => {
            let checks = [
                sentences(g).len() == 1,
                space_split(g) < 20,
                !contain_word(g, "Newton Stewart"),
                re(r"\b(am|is|are)\s+\w+ing\b").is_match(g),
                contain_word(g, "operation"),
            ];
            checks[..l as usize].iter().all(|&c| c)
        }
        "samsum" => {
            let checks = [
                sentences(g).len() == 1,
                space_split(g) < 15,
                contain_word(g, "stuff"),
                !g.to_lowercase().contains("procrast"),
                g.chars().filter(|c| PUNCT.contains(*c)).count() == 1,
            ];
            checks[..l as usize].iter().all(|&c| c)
        }
        "gigaword" => {
            let checks = [
                space_split(g) == 8,
                !g.chars().any(|c| PUNCT.contains(c)),
                is_python_lower(g),
                !contain_word(g, "bus"),
                contain_word(g, "in"),
            ];
            checks[..l as usize].iter().all(|&c| c)
        }
        "arxiv" => {
            let checks = [
                sentences(g).len() == 1,
                space_split(g) <= 20,
                g.starts_with("We"),
                contain_word(g, "activations"),
                !contain_word(g, "transformer"),
            ];
            checks[..l as usize].iter().all(|&c| c)
        }
        _ if item.category == "format" && item.example_id == 22 => format_22(g, l),
        _ if item.category == "format" && item.example_id == 30 => format_30(g, l),
        _ => false,
    }
}

fn format_22(g: &str, l: u32) -> bool {
    let p: Vec<&str> = g.split("\n\n").collect();
    let want = if l >= 5 { 4 } else { 3 };
    if p.len() != want {
        return false;
    }
    if l >= 2 && !(0..3).all(|i| sentences(p[i]).len() < 3) {
        return false;
    }
    if l >= 3 && !sentences(g).iter().all(|s| words(s) > 20) {
        return false;
    }
    if l >= 4 {
        let marker = re(r"^\d+\.");
        let ok = g
            .split("\n\n")
            .map(str::trim_start)
            .filter(|x| !x.is_empty())
            .all(|x| marker.is_match(x));
        if !ok {
            return false;
        }
    }
    l < 5 || g.ends_with("Those are suggestions")
}

/// `re.split(r"(?<!\w\.\w.)(?<![A-Z][a-z]\.)(?<=\.|\?)\s", g)`, written out.
fn split_sentences_30(g: &str) -> Vec<String> {
    let c: Vec<char> = g.chars().collect();
    let word = |x: char| x.is_alphanumeric() || x == '_';
    let mut out = Vec::new();
    let mut cur = String::new();
    for i in 0..c.len() {
        let cut = c[i].is_whitespace()
            && i >= 1
            && (c[i - 1] == '.' || c[i - 1] == '?')
            && !(i >= 4 && word(c[i - 4]) && c[i - 3] == '.' && word(c[i - 2]) && c[i - 1] != '\n')
            && !(i >= 3
                && c[i - 3].is_ascii_uppercase()
                && c[i - 2].is_ascii_lowercase()
                && c[i - 1] == '.');
        if cut {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c[i]);
        }
    }
    out.push(cur);
    out
}

fn format_30(g: &str, l: u32) -> bool {
    let sents = split_sentences_30(g);
    let checks = [
        g.contains("**"),
        re(r"\*\*\d.+?:").find_iter(g).count() == 5,
        sents
            .iter()
            .filter(|s| ["1.", "2.", "3.", "4.", "5."].iter().any(|m| s.contains(m)))
            .all(|s| s.split('.').count() < 3),
        sents.iter().all(|s| (10..=15).contains(&words(s))),
        !g.split_whitespace().any(|w| w.ends_with("-ly")),
    ];
    checks[..l as usize].iter().all(|&c| c)
}

/// The example category: the generation must fit the item's template.
pub fn example_match(target: &str, g: &str) -> bool {
    let t = target
        .replace("{instruction}\n", "")
        .replace("{{", "{")
        .replace("}}", "}");
    let Some((pre, post)) = t.split_once("{answer}") else {
        return false;
    };
    let p = format!("^(?:{}.*{})$", regex::escape(pre), regex::escape(post));
    re(&p).is_match(g)
}

// ---------------------------------------------------------------------------------------
// The LLM judge

fn phrase(category: &str) -> &'static str {
    match category {
        "content" => "one content constraint",
        "situation" => {
            "one situation constraint (information to describe a specific situation/background)"
        }
        "style" => "one style constraint",
        "format" => "one format constraint",
        _ => "one constraint",
    }
}

/// The judge's prompt for an item and its answer (FollowBench's wording).
pub fn judge_prompt(item: &Item, answer: &str) -> String {
    let k = item.level as usize;
    let ev = &item.levels;
    let c = phrase(&item.category);
    if k == 1 {
        return format!(
            "Given an initial instruction, we add {c} and obtain the final instruction with 1 additional constraint.\n\n\
             #Initial Instruction#\n{}\n\n\
             #Initial Instruction + 1 constraint#\n{}\n\n\
             #Answer of Initial Instruction + 1 constraint#\n{answer}\n\n\
             #System#\n1) Please identify the 1 added constraint.\n2) Please descriminate if the #Answer of Initial Instruction + 1 constraint# satisfies the 1 added constraint.\n3) In the final line, only output a Python LIST with 1 element ('YES' or 'NO') indicating whether the answer satisfies the 1 added constraint.",
            ev[0], ev[1]
        );
    }
    let mut s = format!(
        "Given an initial instruction, we add {c} per time and obtain the final instruction with {k} additional constraints.\n\n\
         #Initial Instruction#\n{}\n\n\
         #Initial Instruction + 1 constraint#\n{}\n\n",
        ev[0], ev[1]
    );
    for (i, e) in ev.iter().enumerate().take(k + 1).skip(2) {
        s.push_str(&format!("#Initial Instruction + {i} constraints#\n{e}\n\n"));
    }
    s.push_str(&format!(
        "#Answer of Initial Instruction + {k} constraints#\n{answer}\n\n\
         #System#\n1) Please identify all {k} added constraints.\n2) For the {k} added constraints, discriminate if the #Answer of Initial Instruction + {k} constraints# satisfies each constraint.\n3) In the final line, only output a Python LIST with {k} elements ('YES' or 'NO') indicating whether the answer satisfies each constraint."
    ));
    s
}

/// (all satisfied, share satisfied) from the judge's output; `None` when it cannot be parsed.
pub fn parse_judgment(out: &str, level: u32) -> Option<(f64, f64)> {
    let last = out.trim_matches('`').trim().split('\n').next_back()?;
    if level == 1 {
        return if last.contains("YES") {
            Some((1.0, 1.0))
        } else if last.contains("NO") {
            Some((0.0, 0.0))
        } else {
            None
        };
    }
    let m = re(r"\[.*\]").find(last)?;
    let list = python_str_list(m.as_str())?;
    if list.len() != level as usize {
        return None;
    }
    let mut yes = 0;
    for x in &list {
        match x.as_str() {
            "YES" => yes += 1,
            "NO" | "PARTIAL" | "MAYBE" | "UNKNOWN" | "N/A" => {}
            _ => return None,
        }
    }
    Some((
        if yes == level { 1.0 } else { 0.0 },
        yes as f64 / level as f64,
    ))
}

// ---------------------------------------------------------------------------------------
// Scores

/// One scored item.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    #[serde(flatten)]
    pub item: Item,
    pub method: Method,
    pub generation: String,
    pub hard: f64,
    pub soft: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge_output: Option<String>,
    /// The judge's answer could not be parsed (or the call failed): counted unsatisfied.
    pub unparsed: bool,
}

/// Score an item that needs no judge; `None` for judge items.
pub fn score_without_judge(item: &Item, g: &str) -> Option<f64> {
    match item.method() {
        Method::Example => Some(f64::from(u8::from(example_match(&item.target, g)))),
        Method::Rule => Some(f64::from(u8::from(rule(item, g)))),
        Method::Judge => None,
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CategoryMetrics {
    pub groups: usize,
    /// Per level 1–5 (NaN where the category has no item at that level).
    pub hsr: Vec<f64>,
    pub ssr: Vec<f64>,
    pub csl: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    pub categories: BTreeMap<String, CategoryMetrics>,
    /// Per level, the unweighted mean over categories.
    pub hsr: Vec<f64>,
    pub ssr: Vec<f64>,
    /// Mean over levels.
    pub hsr_avg: f64,
    pub ssr_avg: f64,
    /// Mean over categories.
    pub csl: f64,
    pub items: usize,
    pub judged: usize,
    pub unparsed: usize,
}

pub fn metrics(scored: &[Scored]) -> Metrics {
    let mut categories = BTreeMap::new();
    for cat in CATEGORIES {
        let mine: Vec<&Scored> = scored.iter().filter(|s| s.item.category == cat).collect();
        if mine.is_empty() {
            continue;
        }
        let groups: BTreeSet<u64> = mine.iter().map(|s| s.item.example_id).collect();
        let n = groups.len() as f64;
        let mut hsr = vec![f64::NAN; 5];
        let mut ssr = vec![f64::NAN; 5];
        for l in 1..=5u32 {
            let at: Vec<&&Scored> = mine.iter().filter(|s| s.item.level == l).collect();
            if !at.is_empty() {
                hsr[l as usize - 1] = 100.0 * at.iter().map(|s| s.hard).sum::<f64>() / n;
                ssr[l as usize - 1] = 100.0 * at.iter().map(|s| s.soft).sum::<f64>() / n;
            }
        }
        let mut consecutive = 0.0;
        for g in &groups {
            for l in 1..=5u32 {
                let ok = mine
                    .iter()
                    .any(|s| s.item.example_id == *g && s.item.level == l && s.hard == 1.0);
                if !ok {
                    break;
                }
                consecutive += 1.0;
            }
        }
        categories.insert(
            cat.to_string(),
            CategoryMetrics {
                groups: groups.len(),
                hsr,
                ssr,
                csl: consecutive / n,
            },
        );
    }
    let per_level = |f: fn(&CategoryMetrics) -> &Vec<f64>| -> Vec<f64> {
        (0..5)
            .map(|l| mean(categories.values().map(|c| f(c)[l])))
            .collect()
    };
    let hsr = per_level(|c| &c.hsr);
    let ssr = per_level(|c| &c.ssr);
    Metrics {
        hsr_avg: mean(hsr.iter().copied()),
        ssr_avg: mean(ssr.iter().copied()),
        csl: mean(categories.values().map(|c| c.csl)),
        hsr,
        ssr,
        categories,
        items: scored.len(),
        judged: scored.iter().filter(|s| s.method == Method::Judge).count(),
        unparsed: scored.iter().filter(|s| s.unparsed).count(),
    }
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{x:6.1}")
    } else {
        "     -".into()
    }
}

/// A table of the metrics.
pub fn render(m: &Metrics) -> String {
    let mut s = format!(
        "FollowBench: {} items ({} judged by the LLM, {} judgments unparsed)\n\n{:<10} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}\n",
        m.items, m.judged, m.unparsed, "", "L1", "L2", "L3", "L4", "L5", "avg"
    );
    let row = |name: &str, v: &[f64], avg: f64| {
        format!(
            "{name:<10} {} {}\n",
            v.iter().map(|x| pct(*x)).collect::<Vec<_>>().join(" "),
            pct(avg)
        )
    };
    s.push_str(&row("HSR", &m.hsr, m.hsr_avg));
    s.push_str(&row("SSR", &m.ssr, m.ssr_avg));
    s.push_str(&format!(
        "CSL {:.2}\n\nper category (HSR / SSR by level, CSL):\n",
        m.csl
    ));
    for (name, c) in &m.categories {
        s.push_str(&row(
            &format!("{name} h"),
            &c.hsr,
            mean(c.hsr.iter().copied()),
        ));
        s.push_str(&row(
            &format!("{name} s"),
            &c.ssr,
            mean(c.ssr.iter().copied()),
        ));
        s.push_str(&format!(
            "{:<10} CSL {:.2} over {} groups\n",
            "", c.csl, c.groups
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(category: &str, source: &str, id: u64, level: u32, target: &str) -> Item {
        Item {
            category: category.into(),
            example_id: id,
            level,
            source: source.into(),
            instruction: format!("i{level}"),
            target: target.into(),
            levels: (0..=level).map(|l| format!("i{l}")).collect(),
        }
    }

    #[test]
    fn rules_follow_python_semantics() {
        let x = |l| item("mixed", "xsum", 1, l, "");
        assert!(rule(&x(1), "One sentence only"));
        assert!(!rule(&x(1), "One. Two"));
        // A trailing newline after the period is a second (whitespace) sentence.
        assert!(!rule(&x(1), "One sentence.\n"));
        assert!(rule(&x(4), "The team is planning a rescue operation"));
        assert!(!rule(&x(5), "The team is planning a rescue"));
        let g = |l| item("mixed", "gigaword", 1, l, "");
        assert!(rule(&g(3), "police find the missing boy in the park"));
        assert!(!rule(&g(2), "police find the missing boy in the park."));
        assert!(!rule(&g(3), "Police find the missing boy in the park"));
        let c = item("content", "CONLL2003", 1, 2, "['Britain', \"Germany\"]");
        assert!(rule(&c, "Germany") && !rule(&c, "germany"));
        let b = item("situation", "BBH_logical", 1, 1, "(B)");
        assert!(rule(&b, "(A) no... the answer is (B)") && !rule(&b, "(B) then (C)"));
        let m = item("situation", "gsm_8k", 1, 1, "$14");
        assert!(rule(&m, "She pays $10 and then $14"));
        let w = item("content", "WIKIEVENTS", 1, 1, "a\nb\nc");
        assert!(rule(&w, "c\na") && !rule(&w, "a\nd"));
    }

    #[test]
    fn format_30_sentence_split() {
        assert_eq!(
            split_sentences_30("It works. Mr. Smith came. e.g. this? Yes"),
            vec!["It works.", "Mr. Smith came.", "e.g. this?", "Yes"]
        );
    }

    #[test]
    fn example_templates() {
        assert!(example_match(
            "{instruction}\n{{'AI assistant': '{answer}'}}",
            "{'AI assistant': 'Legal'}"
        ));
        assert!(!example_match(
            "{instruction}\n{{'AI assistant': '{answer}'}}",
            "'AI assistant': 'Legal'"
        ));
        assert!(example_match(
            "{instruction}\nAnswer: {answer}",
            "Answer: 42"
        ));
        assert!(!example_match(
            "{instruction}\nAnswer: {answer}",
            "Answer: 4\n2"
        ));
    }

    #[test]
    fn judge_parse_like_the_reference() {
        assert_eq!(parse_judgment("blah\n['YES']", 1), Some((1.0, 1.0)));
        assert_eq!(parse_judgment("NO", 1), Some((0.0, 0.0)));
        assert_eq!(parse_judgment("maybe", 1), None);
        assert_eq!(
            parse_judgment("x\n```\n['YES', 'NO', \"YES\"]\n```", 3),
            Some((0.0, 2.0 / 3.0))
        );
        assert_eq!(parse_judgment("['YES', 'YES']", 2), Some((1.0, 1.0)));
        assert_eq!(parse_judgment("['YES']", 2), None, "wrong length");
        assert_eq!(parse_judgment("[YES, NO]", 2), None, "unquoted");
        assert_eq!(parse_judgment("['YES', 'PARTIAL']", 2), Some((0.0, 0.5)));
        let p = judge_prompt(&item("style", "oasst", 1, 2, ""), "ANS");
        assert!(p.contains("one style constraint per time") && p.contains("#Initial Instruction + 2 constraints#\ni2\n\n#Answer of Initial Instruction + 2 constraints#\nANS"));
        assert!(judge_prompt(&item("format", "oasst", 1, 1, ""), "A").contains("descriminate"));
    }

    #[test]
    fn metrics_by_hand() {
        // Two style groups: group 1 passes L1, L2 and fails L3; group 2 fails L1, passes L2.
        let s = |id, l, hard: f64, soft: f64| Scored {
            item: item("style", "oasst", id, l, ""),
            method: Method::Judge,
            generation: String::new(),
            hard,
            soft,
            judge_output: None,
            unparsed: false,
        };
        let m = metrics(&[
            s(1, 1, 1.0, 1.0),
            s(1, 2, 1.0, 1.0),
            s(1, 3, 0.0, 2.0 / 3.0),
            s(2, 1, 0.0, 0.0),
            s(2, 2, 1.0, 1.0),
        ]);
        let c = &m.categories["style"];
        assert_eq!(c.groups, 2);
        assert_eq!(c.hsr[..3], [50.0, 100.0, 0.0]);
        assert!((c.ssr[2] - 100.0 / 3.0).abs() < 1e-9);
        assert!(c.hsr[3].is_nan());
        assert_eq!(c.csl, 1.0); // (2 + 0) / 2
        assert_eq!(m.hsr_avg, 50.0); // mean of 50, 100, 0
    }
}
