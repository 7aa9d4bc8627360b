//! Conformance suites, one per world: what any plugin of a kind must do, checked through
//! the real sandbox. `spar-host plugin check FILE` runs the suite of the file's kind.

use std::collections::{HashMap, HashSet};

use super::checker::Checker;
use super::prompts::{Prompts, Verdict};
use super::search::{
    BoxFuture, Judgment, Node, Refinement, SearchHost, SearchParams, SearchStrategy,
};
use super::taxonomy::Taxonomy;
use super::{GuestError, Plugin, PluginError, PluginKind};

/// The outcome of one suite: each case's name and its failure, if any.
#[derive(Debug, Default)]
pub struct Report {
    pub cases: Vec<(String, Option<String>)>,
}

impl Report {
    fn case(&mut self, name: impl Into<String>, result: Result<(), String>) {
        self.cases.push((name.into(), result.err()));
    }

    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|(_, e)| e.is_none()).count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    /// One line per case, then `N passed, M failed`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, err) in &self.cases {
            match err {
                None => out.push_str(&format!("ok    {name}\n")),
                Some(e) => out.push_str(&format!("FAIL  {name}: {e}\n")),
            }
        }
        out.push_str(&format!(
            "{} passed, {} failed\n",
            self.passed(),
            self.failed()
        ));
        out
    }
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg()) }
}

/// Run the suite of the plugin's kind (read from its exports).
pub async fn run(plugin: Plugin) -> Result<Report, PluginError> {
    match plugin.kind {
        Some(PluginKind::Checker) => Ok(checker_suite(Checker::from_plugin(plugin).await?).await),
        Some(PluginKind::JudgePrompts) => {
            Ok(prompts_suite(Prompts::from_plugin(plugin).await?).await)
        }
        Some(PluginKind::Taxonomy) => {
            Ok(taxonomy_suite(Taxonomy::from_plugin(plugin).await?).await)
        }
        Some(PluginKind::SearchStrategy) => {
            Ok(search_suite(SearchStrategy::from_plugin(plugin).await?).await)
        }
        None => Err(PluginError::WrongWorld {
            plugin: plugin.label(),
            kind: PluginKind::Checker,
            missing: format!(
                "it exports none of the spar worlds' interfaces ({}); it exports {}",
                PluginKind::ALL.map(|k| k.export()).join(", "),
                if plugin.exports.is_empty() {
                    "nothing".to_string()
                } else {
                    plugin.exports.join(", ")
                }
            ),
        }),
    }
}

fn info_case(report: &mut Report, info: Option<&super::PluginInfo>) {
    report.case(
        "info names the plugin and a semantic version",
        match info {
            Some(i) => ensure(
                !i.name.trim().is_empty() && i.version.split('.').count() == 3,
                || format!("name {:?}, version {:?}", i.name, i.version),
            ),
            None => Err("no info".into()),
        },
    );
}

pub async fn checker_suite(mut c: Checker) -> Report {
    let mut r = Report::default();
    info_case(&mut r, c.plugin().info.as_ref());
    let specs = match c.list().await {
        Ok(s) => s,
        Err(e) => {
            r.case("list", Err(e.to_string()));
            return r;
        }
    };
    r.case(
        "list is not empty",
        ensure(!specs.is_empty(), || "no instruction types".into()),
    );
    let mut seen = HashSet::new();
    let dups: Vec<_> = specs
        .iter()
        .filter(|s| !seen.insert(s.id.clone()))
        .map(|s| s.id.clone())
        .collect();
    r.case(
        "instruction ids are unique",
        ensure(dups.is_empty(), || format!("duplicated: {dups:?}")),
    );
    r.case(
        "kwargs schemas are JSON objects",
        ensure(specs.iter().all(|s| s.kwargs_schema.is_object()), || {
            "a schema is not an object".into()
        }),
    );
    for spec in &specs {
        let id = &spec.id;
        let inst = c.instantiate(id, 7).await;
        let again = c.instantiate(id, 7).await;
        let inst = match (inst, again) {
            (Ok(a), Ok(b)) => {
                r.case(
                    format!("{id}: instantiate is deterministic for a seed"),
                    ensure(a == b, || format!("{a:?} vs {b:?}")),
                );
                r.case(
                    format!("{id}: instance text is not empty"),
                    ensure(!a.text.trim().is_empty(), || "empty text".into()),
                );
                a
            }
            (Err(e), _) | (_, Err(e)) => {
                r.case(format!("{id}: instantiate"), Err(e.to_string()));
                continue;
            }
        };
        let kwargs = serde_json::Value::Object(inst.kwargs.clone()).to_string();
        let prompt = format!("Write a short note about rivers. {}", inst.text);
        let mut ok = Ok(());
        for response in [
            "",
            "Rivers flow.",
            &"word ".repeat(400),
            "*Rivers*\n\nflow to the sea.",
        ] {
            match c.check(id, &kwargs, &prompt, response).await {
                Ok(v) if v.strict && !v.loose => {
                    ok = Err(format!("strict pass but loose fail on {response:?}"));
                }
                Ok(_) => {}
                Err(e) => ok = Err(e.to_string()),
            }
        }
        r.case(
            format!("{id}: check answers its own instances (loose ⊇ strict)"),
            ok,
        );
    }
    r.case(
        "an unknown instruction id is a typed error, not a trap",
        match c.check("no-such:instruction", "{}", "p", "r").await {
            Err(PluginError::Guest { .. }) => Ok(()),
            other => Err(format!("got {other:?}")),
        },
    );
    if let Some(spec) = specs.first() {
        r.case(
            "malformed kwargs are a typed error, not a trap",
            match c.check(&spec.id, "{not json", "p", "r").await {
                Err(PluginError::Guest { .. }) => Ok(()),
                other => Err(format!("got {other:?}")),
            },
        );
    }
    r
}

pub async fn prompts_suite(mut p: Prompts) -> Report {
    let mut r = Report::default();
    info_case(&mut r, p.plugin().info.as_ref());
    let (prompt, response, critique) = (
        "Write a haiku about autumn in lowercase.",
        "Leaves Fall Slowly\nred and gold\nwind sighs",
        "The output uses uppercase letters.",
    );
    r.case(
        "judge conversation shows the prompt and the output, and ends with the user",
        match p.judge_messages(prompt, response).await {
            Ok(m) => ensure(
                m.last().is_some_and(|m| m.role == "user")
                    && m.iter().any(|m| m.content.contains(prompt))
                    && m.iter().any(|m| m.content.contains(response)),
                || format!("{m:?}"),
            ),
            Err(e) => Err(e.to_string()),
        },
    );
    r.case(
        "refine conversation carries the critique, and ends with the user",
        match p.refine_messages(prompt, response, critique).await {
            Ok(m) => ensure(
                m.last().is_some_and(|m| m.role == "user")
                    && m.iter().any(|m| m.content.contains(critique))
                    && m.iter().any(|m| m.content.contains(response)),
                || format!("{m:?}"),
            ),
            Err(e) => Err(e.to_string()),
        },
    );
    for (text, want) in [
        (
            "Step-by-step verification: fine.\nFinal Judgement (if the Output accurately follows the Prompt): Yes",
            Verdict::Yes,
        ),
        (
            "Step-by-step verification: uppercase.\nFinal Judgement (if the Output accurately follows the Prompt): No",
            Verdict::No,
        ),
        ("I cannot tell.", Verdict::Unparseable),
        ("", Verdict::Unparseable),
    ] {
        r.case(
            format!(
                "parse-verdict {:?} → {want:?}",
                text.chars().take(40).collect::<String>()
            ),
            match p.parse_verdict(text).await {
                Ok(v) => ensure(v == want, || format!("got {v:?}")),
                Err(e) => Err(e.to_string()),
            },
        );
    }
    for (text, want) in [
        (
            "Reflection on how to refine the Output: lowercase it.\nFinal Refined Output: [[start]] leaves fall slowly [[end]]",
            Some("leaves fall slowly"),
        ),
        ("no markers at all", None),
        ("Final Refined Output: [[start]]   [[end]]", Some("")),
    ] {
        r.case(
            format!(
                "extract-refinement {:?}",
                text.chars().take(40).collect::<String>()
            ),
            match p.extract_refinement(text).await {
                Ok(v) => ensure(v.as_deref() == want, || format!("got {v:?}")),
                Err(e) => Err(e.to_string()),
            },
        );
    }
    let huge = "x".repeat(1 << 20);
    r.case(
        "a 1 MiB judge output is handled without a trap",
        p.parse_verdict(&huge)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    r
}

pub async fn taxonomy_suite(mut t: Taxonomy) -> Report {
    let mut r = Report::default();
    info_case(&mut r, t.plugin().info.as_ref());
    let cats = match t.categories().await {
        Ok(c) => c,
        Err(e) => {
            r.case("categories", Err(e.to_string()));
            return r;
        }
    };
    let paths: Vec<String> = cats.iter().flat_map(|c| c.type_paths()).collect();
    let unique: HashSet<_> = paths.iter().collect();
    r.case(
        "categories are not empty and type paths are unique",
        ensure(!paths.is_empty() && unique.len() == paths.len(), || {
            format!("{} paths, {} unique", paths.len(), unique.len())
        }),
    );
    let seed = "Describe the water cycle to a ten-year-old.";
    if let Some(main) = paths.first() {
        r.case(
            "evolution conversation carries the seed and the main constraint type",
            match t.evolution_messages(seed, main).await {
                Ok(m) => {
                    let ty = main.rsplit('/').next().unwrap_or(main);
                    ensure(
                        m.iter().any(|m| m.content.contains(seed))
                            && m.iter().any(|m| m.content.contains(ty)),
                        || format!("{m:?}"),
                    )
                }
                Err(e) => Err(e.to_string()),
            },
        );
    }
    r.case(
        "an unknown main type is a typed error",
        match t.evolution_messages(seed, "No/such-type").await {
            Err(PluginError::Guest { .. }) => Ok(()),
            other => Err(format!("got {other:?}")),
        },
    );
    r.case(
        "parse-evolved extracts the text between the markers",
        match t
            .parse_evolved("Here it is: [[start]] Explain rain in 3 sentences. [[end]]")
            .await
        {
            Ok(Some(p)) => ensure(p == "Explain rain in 3 sentences.", || p.clone()),
            other => Err(format!("got {other:?}")),
        },
    );
    r.case(
        "parse-evolved drops a seed answered with None",
        match t.parse_evolved("[[start]] None [[end]]").await {
            Ok(None) => Ok(()),
            other => Err(format!("got {other:?}")),
        },
    );
    r
}

/// A scripted refiner and judge: the refinement of `X` is `X.k` (k = refine calls made for
/// `X` so far); a response's value comes from a fixed table or a hash of its text.
pub struct ScriptedHost {
    pub budget: i32,
    pub refine_counts: HashMap<String, u32>,
    pub values: HashMap<String, f64>,
    pub fail_refines: bool,
    pub cache: HashMap<String, Judgment>,
    pub refined: Vec<String>,
    pub judged: Vec<String>,
}

impl ScriptedHost {
    pub fn new(budget: i32) -> Self {
        Self {
            budget,
            refine_counts: HashMap::new(),
            values: HashMap::new(),
            fail_refines: false,
            cache: HashMap::new(),
            refined: Vec::new(),
            judged: Vec::new(),
        }
    }

    fn value_of(&self, response: &str) -> f64 {
        if let Some(v) = self.values.get(response) {
            return *v;
        }
        let h = response
            .bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        [0.0, 0.2, 0.4, 0.4][(h % 4) as usize]
    }
}

impl SearchHost for ScriptedHost {
    fn refine<'a>(&'a mut self, parent: &'a Node) -> BoxFuture<'a, Result<Refinement, GuestError>> {
        Box::pin(async move {
            if self.fail_refines {
                return Err(GuestError::Model("scripted refine failure".into()));
            }
            let k = self
                .refine_counts
                .entry(parent.response.clone())
                .or_default();
            let response = format!("{}.{k}", parent.response);
            *k += 1;
            self.refined.push(response.clone());
            Ok(Refinement {
                output: format!("cot:{response}"),
                response,
            })
        })
    }

    fn judge<'a>(&'a mut self, response: &'a str) -> BoxFuture<'a, Result<Judgment, GuestError>> {
        Box::pin(async move {
            self.judged.push(response.to_string());
            let j = match self.cache.get(response) {
                Some(j) => Judgment {
                    cached: true,
                    ..j.clone()
                },
                None => {
                    let value = self.value_of(response);
                    let j = Judgment {
                        critique: format!("crit:{response}"),
                        value,
                        yes: (value * 5.0).round() as u32,
                        no: 5 - (value * 5.0).round() as u32,
                        unparseable: 0,
                        cached: false,
                    };
                    self.cache.insert(response.to_string(), j.clone());
                    j
                }
            };
            self.budget -= 1;
            Ok(j)
        })
    }

    fn budget_left(&self) -> i32 {
        self.budget
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

fn root() -> Node {
    Node {
        id: 0,
        parent: None,
        depth: 0,
        response: "r".into(),
        critique: "crit:r".into(),
        value: 0.0,
        refine_output: String::new(),
        visit_sequence: 0,
    }
}

async fn run_scripted(
    s: &SearchStrategy,
    host: ScriptedHost,
    params: &SearchParams,
) -> (
    Result<super::search::Outcome, PluginError>,
    Option<ScriptedHost>,
) {
    let (out, host) = s
        .search("Write a poem.", &root(), params, Box::new(host))
        .await;
    let host = host.and_then(|h| h.into_any().downcast::<ScriptedHost>().ok().map(|b| *b));
    (out, host)
}

pub async fn search_suite(s: SearchStrategy) -> Report {
    let mut r = Report::default();
    info_case(&mut r, s.plugin().info.as_ref());
    let params = SearchParams::default();

    let (out, host) = run_scripted(&s, ScriptedHost::new(15), &params).await;
    match (&out, &host) {
        (Ok(o), Some(h)) => {
            r.case(
                "every non-root node is a refinement the host produced",
                ensure(
                    o.nodes
                        .iter()
                        .skip(1)
                        .all(|n| h.refined.contains(&n.response)),
                    || "a node the refiner never returned".into(),
                ),
            );
            r.case(
                "node values are the host's judgments",
                ensure(
                    o.nodes
                        .iter()
                        .skip(1)
                        .all(|n| h.cache.get(&n.response).is_some_and(|j| j.value == n.value)),
                    || "a value the judge never gave".into(),
                ),
            );
            r.case(
                "at most one judged child beyond the budget",
                ensure(o.nodes.len() - 1 <= 16, || {
                    format!("{} children", o.nodes.len() - 1)
                }),
            );
        }
        (Err(e), _) => r.case("search with a scripted host", Err(e.to_string())),
        (_, None) => r.case("search gives the host back", Err("host lost".into())),
    }
    let (again, _) = run_scripted(&s, ScriptedHost::new(15), &params).await;
    r.case(
        "search is deterministic for the same host answers",
        ensure(matches!((&out, &again), (Ok(a), Ok(b)) if a == b), || {
            "two runs differ".into()
        }),
    );

    let mut high = ScriptedHost::new(15);
    high.values.insert("r.0".into(), 1.0);
    let (out, _) = run_scripted(&s, high, &params).await;
    r.case(
        "a child above end-gate is the solution",
        match out {
            Ok(o) => ensure(
                o.found && o.nodes[o.final_node as usize].response == "r.0",
                || format!("final {:?}", o.nodes[o.final_node as usize].response),
            ),
            Err(e) => Err(e.to_string()),
        },
    );

    let mut failing = ScriptedHost::new(15);
    failing.fail_refines = true;
    let (out, host) = run_scripted(&s, failing, &params).await;
    r.case(
        "failed refinements end in the root alone, without a trap",
        match (out, host) {
            (Ok(o), Some(h)) => ensure(
                o.nodes.len() == 1 && !o.found && h.judged.is_empty(),
                || format!("{} nodes", o.nodes.len()),
            ),
            (Err(PluginError::Guest { .. }), _) => Ok(()),
            (other, _) => Err(format!("got {:?}", other.map(|o| o.nodes.len()))),
        },
    );

    let (out, host) = run_scripted(&s, ScriptedHost::new(0), &params).await;
    r.case(
        "a zero budget judges at most one child",
        match (out, host) {
            (Ok(o), Some(h)) => ensure(h.judged.len() <= 1 && o.nodes.len() <= 2, || {
                format!("{} judged", h.judged.len())
            }),
            (Err(PluginError::Guest { .. }), _) => Ok(()),
            (other, _) => Err(format!("got {:?}", other.map(|o| o.nodes.len()))),
        },
    );
    r
}
