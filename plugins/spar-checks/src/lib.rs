//! `spar:constraints` plugin: verifiable constraint types of the SPaR taxonomy (§1) that
//! IFEval lacks. Loose mode follows IFEval: a pass on any of the response as is, without its
//! first line, without its last line, or without both, each also with `*` removed.

wit_bindgen::generate!({
    world: "spar:constraints/checker@0.1.0",
    path: ["../../wit/types", "../../wit/constraints"],
    generate_all,
});

use exports::spar::constraints::checks::{Guest, Instance, InstructionSpec, Verdict};
use serde_json::{Map, Value, json};
use spar::types::types::{Error, PluginInfo};

type Kwargs = Map<String, Value>;

/// How a count compares to its target.
#[derive(Clone, Copy)]
enum Relation {
    Exactly,
    AtLeast,
    LessThan,
}

impl Relation {
    fn parse(k: &Kwargs) -> Result<Self, Error> {
        match k
            .get("relation")
            .and_then(Value::as_str)
            .unwrap_or("exactly")
        {
            "exactly" => Ok(Relation::Exactly),
            "at least" => Ok(Relation::AtLeast),
            "less than" => Ok(Relation::LessThan),
            r => Err(Error::InvalidInput(format!(
                "relation `{r}` is not one of: exactly, at least, less than"
            ))),
        }
    }

    fn holds(self, n: usize, target: usize) -> bool {
        match self {
            Relation::Exactly => n == target,
            Relation::AtLeast => n >= target,
            Relation::LessThan => n < target,
        }
    }

    fn words(self) -> &'static str {
        match self {
            Relation::Exactly => "exactly",
            Relation::AtLeast => "at least",
            Relation::LessThan => "less than",
        }
    }
}

fn count_arg(k: &Kwargs, name: &str) -> Result<usize, Error> {
    k.get(name)
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .ok_or_else(|| Error::InvalidInput(format!("`{name}` must be a non-negative integer")))
}

fn str_arg<'a>(k: &'a Kwargs, name: &str) -> Result<&'a str, Error> {
    k.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::InvalidInput(format!("`{name}` must be a non-empty string")))
}

fn is_emoji(c: char) -> bool {
    matches!(c as u32,
        0x1F300..=0x1F5FF | 0x1F600..=0x1F64F | 0x1F680..=0x1F6FF | 0x1F900..=0x1F9FF
        | 0x1FA70..=0x1FAFF | 0x2600..=0x26FF | 0x2700..=0x27BF | 0x1F1E6..=0x1F1FF)
}

/// Ordinals written with digits (1st, 22nd, 103rd, 4th) or as words (first … twentieth).
fn count_ordinals(text: &str) -> usize {
    const WORDS: &[&str] = &[
        "first",
        "second",
        "third",
        "fourth",
        "fifth",
        "sixth",
        "seventh",
        "eighth",
        "ninth",
        "tenth",
        "eleventh",
        "twelfth",
        "thirteenth",
        "fourteenth",
        "fifteenth",
        "sixteenth",
        "seventeenth",
        "eighteenth",
        "nineteenth",
        "twentieth",
    ];
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| {
            let lower = w.to_lowercase();
            if WORDS.contains(&lower.as_str()) {
                return true;
            }
            let digits: String = lower.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() {
                return false;
            }
            let suffix = &lower[digits.len()..];
            let n: u64 = digits.parse().unwrap_or(0);
            let want = match (n % 100, n % 10) {
                (11..=13, _) => "th",
                (_, 1) => "st",
                (_, 2) => "nd",
                (_, 3) => "rd",
                _ => "th",
            };
            suffix == want
        })
        .count()
}

/// Rows of Markdown tables, not counting header and separator rows.
fn table_rows(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut rows = 0;
    let mut i = 0;
    while i < lines.len() {
        let is_sep = |l: &str| {
            l.starts_with('|') && l.contains('-') && l.chars().all(|c| "|-: ".contains(c))
        };
        if lines[i].starts_with('|') && i + 1 < lines.len() && is_sep(lines[i + 1]) {
            i += 2;
            while i < lines.len() && lines[i].starts_with('|') {
                rows += 1;
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    rows
}

/// The JSON object in the response, allowing a ```json fence around it.
fn json_object(text: &str) -> Option<Map<String, Value>> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```JSON"))
        .or_else(|| t.strip_prefix("```"))
        .map(|s| s.trim_end().strip_suffix("```").unwrap_or(s))
        .unwrap_or(t);
    match serde_json::from_str(t.trim()) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

type CheckFn = fn(&Kwargs, &str) -> Result<bool, Error>;

struct Spec {
    id: &'static str,
    description: &'static str,
    schema: fn() -> Value,
    check: CheckFn,
    instantiate: fn(&mut Rng) -> (String, Value),
}

const RELATIONS: [Relation; 3] = [Relation::Exactly, Relation::AtLeast, Relation::LessThan];

fn counted_schema(name: &str) -> Value {
    json!({"type": "object", "properties": {
        name: {"type": "integer", "minimum": 0},
        "relation": {"enum": ["exactly", "at least", "less than"]}},
        "required": [name]})
}

const SPECS: &[Spec] = &[
    Spec {
        id: "spar:ends_with_punctuation",
        description: "The response ends with a given punctuation mark",
        schema: || json!({"type": "object", "properties": {"punctuation": {"type": "string"}}, "required": ["punctuation"]}),
        check: |k, r| Ok(r.trim_end().ends_with(str_arg(k, "punctuation")?)),
        instantiate: |rng| {
            let p = ["!", "?", "...", ";"][rng.below(4)];
            (
                format!("End your whole response with \"{p}\"."),
                json!({"punctuation": p}),
            )
        },
    },
    Spec {
        id: "spar:emoji_count",
        description: "The response contains a given number of emoji",
        schema: || counted_schema("count"),
        check: |k, r| {
            let n = r.chars().filter(|c| is_emoji(*c)).count();
            Ok(Relation::parse(k)?.holds(n, count_arg(k, "count")?))
        },
        instantiate: |rng| {
            let (rel, n) = (RELATIONS[rng.below(3)], 1 + rng.below(5));
            (
                format!("Use {} {n} emoji in your response.", rel.words()),
                json!({"count": n, "relation": rel.words()}),
            )
        },
    },
    Spec {
        id: "spar:title_case",
        description: "Every word of the response starts with a capital letter",
        schema: || json!({"type": "object", "properties": {}}),
        check: |_, r| {
            let mut words = r
                .split_whitespace()
                .filter_map(|w| w.chars().find(|c| c.is_alphabetic()))
                .peekable();
            Ok(words.peek().is_some() && words.all(char::is_uppercase))
        },
        instantiate: |_| {
            (
                "Write every word of your response in Title Case.".into(),
                json!({}),
            )
        },
    },
    Spec {
        id: "spar:question_count",
        description: "The response asks a given number of questions",
        schema: || counted_schema("count"),
        check: |k, r| {
            let n = r.matches('?').count();
            Ok(Relation::parse(k)?.holds(n, count_arg(k, "count")?))
        },
        instantiate: |rng| {
            let (rel, n) = (RELATIONS[rng.below(3)], 1 + rng.below(4));
            (
                format!("Ask {} {n} questions in your response.", rel.words()),
                json!({"count": n, "relation": rel.words()}),
            )
        },
    },
    Spec {
        id: "spar:markdown_table_rows",
        description: "The response has a Markdown table with a given number of data rows",
        schema: || counted_schema("rows"),
        check: |k, r| Ok(Relation::parse(k)?.holds(table_rows(r), count_arg(k, "rows")?)),
        instantiate: |rng| {
            let n = 2 + rng.below(5);
            (
                format!("Include a Markdown table with exactly {n} rows below its header."),
                json!({"rows": n, "relation": "exactly"}),
            )
        },
    },
    Spec {
        id: "spar:json_keys",
        description: "The whole response is a JSON object with the given keys",
        schema: || json!({"type": "object", "properties": {"keys": {"type": "array", "items": {"type": "string"}}}, "required": ["keys"]}),
        check: |k, r| {
            let keys = k
                .get("keys")
                .and_then(Value::as_array)
                .ok_or_else(|| Error::InvalidInput("`keys` must be a list of strings".into()))?;
            Ok(json_object(r).is_some_and(|o| {
                keys.iter()
                    .all(|key| key.as_str().is_some_and(|key| o.contains_key(key)))
            }))
        },
        instantiate: |rng| {
            const POOL: [&str; 6] = ["title", "summary", "steps", "author", "tags", "rating"];
            let a = rng.below(6);
            let b = (a + 1 + rng.below(5)) % 6;
            let keys = [POOL[a], POOL[b]];
            (
                format!(
                    "Answer only with a JSON object that has the keys \"{}\" and \"{}\".",
                    keys[0], keys[1]
                ),
                json!({"keys": keys}),
            )
        },
    },
    Spec {
        id: "spar:ordinal_numbers",
        description: "The response uses a given number of ordinal numbers (1st, second, ...)",
        schema: || counted_schema("count"),
        check: |k, r| Ok(Relation::parse(k)?.holds(count_ordinals(r), count_arg(k, "count")?)),
        instantiate: |rng| {
            let n = 1 + rng.below(4);
            (
                format!("Use at least {n} ordinal numbers such as \"1st\" or \"second\"."),
                json!({"count": n, "relation": "at least"}),
            )
        },
    },
];

/// splitmix64: a tiny deterministic generator for `instantiate`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// IFEval's loose variants of a response other than the response itself: without its first
/// line, without its last line, without both, and each of the four with `*` removed. Empty
/// and repeated variants are left out, so a one-line response without `*` has none.
fn loose_variants(response: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |v: String| {
        if !v.trim().is_empty() && v != response && !out.contains(&v) {
            out.push(v);
        }
    };
    let has_star = response.contains('*');
    if !has_star && !response.contains('\n') {
        return out;
    }
    let lines: Vec<&str> = response.split('\n').collect();
    let n = lines.len();
    let mut base = vec![response.to_string()];
    if n > 1 {
        base.push(lines[1..].join("\n"));
        base.push(lines[..n - 1].join("\n"));
    }
    if n > 2 {
        base.push(lines[1..n - 1].join("\n"));
    }
    for b in base {
        if has_star {
            push(b.replace('*', ""));
        }
        push(b);
    }
    out
}

thread_local! {
    /// The last kwargs parsed: consecutive checks of one instruction reuse them.
    static LAST_KWARGS: std::cell::RefCell<Option<(String, std::rc::Rc<Kwargs>)>> =
        const { std::cell::RefCell::new(None) };
}

fn parse_kwargs(json: String) -> Result<std::rc::Rc<Kwargs>, Error> {
    if let Some(hit) = LAST_KWARGS.with_borrow(|last| {
        last.as_ref()
            .filter(|(k, _)| *k == json)
            .map(|(_, v)| v.clone())
    }) {
        return Ok(hit);
    }
    let parsed = match serde_json::from_str(&json) {
        Ok(Value::Object(m)) => std::rc::Rc::new(m),
        Ok(_) => return Err(Error::InvalidInput("kwargs must be a JSON object".into())),
        Err(e) => return Err(Error::InvalidInput(format!("kwargs are not JSON: {e}"))),
    };
    LAST_KWARGS.with_borrow_mut(|last| *last = Some((json, parsed.clone())));
    Ok(parsed)
}

fn spec(id: &str) -> Result<&'static Spec, Error> {
    SPECS
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| Error::UnknownId(format!("`{id}` is not an instruction of spar-checks")))
}

struct Checks;

impl Guest for Checks {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "spar-checks".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Verifiable SPaR-taxonomy constraints beyond IFEval".into(),
        }
    }

    fn list() -> Vec<InstructionSpec> {
        SPECS
            .iter()
            .map(|s| InstructionSpec {
                id: s.id.into(),
                description: s.description.into(),
                kwargs_schema: (s.schema)().to_string(),
            })
            .collect()
    }

    fn check(
        id: String,
        kwargs_json: String,
        _prompt: String,
        response: String,
    ) -> Result<Verdict, Error> {
        let spec = spec(&id)?;
        let kwargs = parse_kwargs(kwargs_json)?;
        let strict = (spec.check)(&kwargs, &response)?;
        let loose = strict
            || loose_variants(&response)
                .iter()
                .any(|v| (spec.check)(&kwargs, v).unwrap_or(false));
        Ok(Verdict { strict, loose })
    }

    fn instantiate(id: String, seed: u64) -> Result<Instance, Error> {
        let spec = spec(&id)?;
        let (text, kwargs) = (spec.instantiate)(&mut Rng(seed));
        Ok(Instance {
            id,
            text,
            kwargs_json: kwargs.to_string(),
        })
    }
}

export!(Checks);
