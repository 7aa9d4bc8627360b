//! Judging by vote (SPaR §3.2) and the model-backed host of the tree search (§3.4).

use std::collections::HashMap;

use crate::backend::Generator;
use crate::model::generate::SamplingParams;
use crate::model::tokenizer::ChatMessage;
use crate::plugin::GuestError;
use crate::plugin::checker::CheckerSet;
use crate::plugin::prompts::{Prompts, Verdict};
use crate::plugin::search::{BoxFuture, Judgment, Node, Refinement, SearchHost};
use crate::plugin::types::Message;

/// Vote settings; the paper's values by default (k 5, T 0.7, top-p 1.0, 3 retries on a tie).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoteConfig {
    pub k: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
    pub tie_retries: usize,
}

impl Default for VoteConfig {
    fn default() -> Self {
        Self {
            k: 5,
            temperature: 0.7,
            top_p: 1.0,
            max_new_tokens: 512,
            tie_retries: 3,
        }
    }
}

/// Where a node's value comes from (beyond the paper: prompts that carry verifiable
/// constraints can be valued by the checker plugins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueMode {
    /// The refiner's vote (the paper).
    #[default]
    Vote,
    /// The checker plugins (strict): 1 when every constraint of the prompt passes, else half
    /// the share passed (so partial passes rank but never count as following); the critique
    /// lists the failed ones. Prompts without constraints fall back to the vote.
    Checkers,
    /// Both: the vote, with the value capped by the checkers' share — a response counts as
    /// following only when the judge and the checkers agree.
    Both,
}

/// The verifiable constraints of one prompt and the checker plugins that verify them.
pub struct Constraints {
    pub set: CheckerSet,
    /// (instruction id, kwargs as JSON)
    pub list: Vec<(String, String)>,
}

impl Constraints {
    /// Check `response`; the judgment has yes = passed, no = failed, and a critique in the
    /// judge's answer format naming what failed.
    pub async fn judge(&mut self, prompt: &str, response: &str) -> Result<Judgment, GuestError> {
        let mut failed = Vec::new();
        for (id, kwargs) in &self.list {
            let v = self
                .set
                .check(id, kwargs, prompt, response)
                .await
                .map_err(|e| GuestError::Other(format!("checking `{id}`: {e}")))?;
            if !v.strict {
                failed.push(id.clone());
            }
        }
        let total = self.list.len() as u32;
        let no = failed.len() as u32;
        let critique = if failed.is_empty() {
            "Step-by-step verification: every constraint is satisfied.\n\
             Final Judgement (if the Output accurately follows the Prompt): Yes"
                .to_string()
        } else {
            format!(
                "Step-by-step verification: unsatisfied constraints: {}.\n\
                 Final Judgement (if the Output accurately follows the Prompt): No",
                failed.join(", ")
            )
        };
        Ok(Judgment {
            critique,
            // Following means passing every constraint: 1 then, else half the share
            // passed — below the end gate, still ranking responses that pass more.
            value: if no == 0 {
                1.0
            } else {
                0.5 * (total - no) as f64 / total as f64
            },
            yes: total - no,
            no,
            unparseable: 0,
            cached: false,
        })
    }
}

/// Judge a response the configured way: by vote, by the checkers, or both.
#[allow(clippy::too_many_arguments)]
pub async fn judge_response(
    engine: &Generator,
    prompts: &mut Prompts,
    constraints: Option<&mut Constraints>,
    mode: ValueMode,
    prompt: &str,
    response: &str,
    cfg: &VoteConfig,
    seed: u64,
) -> Result<Option<Judgment>, GuestError> {
    let constraints = constraints.filter(|c| !c.list.is_empty());
    match (mode, constraints) {
        (ValueMode::Checkers, Some(c)) => c.judge(prompt, response).await.map(Some),
        (ValueMode::Both, Some(c)) => {
            let checked = c.judge(prompt, response).await?;
            Ok(judge_by_vote(engine, prompts, prompt, response, cfg, seed)
                .await?
                .map(|v| Judgment {
                    value: v.value.min(checked.value),
                    ..v
                }))
        }
        _ => judge_by_vote(engine, prompts, prompt, response, cfg, seed).await,
    }
}

/// The reference aggregation: unparseable samples are ignored; #yes = #no (0 = 0 included)
/// is no judgment; the label is the majority, the value the share of yes, and the critique
/// the first sample whose verdict equals the label.
pub fn aggregate(outputs: &[String], verdicts: &[Verdict]) -> Option<Judgment> {
    let yes = verdicts.iter().filter(|v| **v == Verdict::Yes).count() as u32;
    let no = verdicts.iter().filter(|v| **v == Verdict::No).count() as u32;
    if yes == no {
        return None;
    }
    let label = if yes > no { Verdict::Yes } else { Verdict::No };
    let critique = outputs
        .iter()
        .zip(verdicts)
        .find(|(_, v)| **v == label)
        .map(|(o, _)| o.clone())?;
    Some(Judgment {
        critique,
        value: yes as f64 / (yes + no) as f64,
        yes,
        no,
        unparseable: verdicts.len() as u32 - yes - no,
        cached: false,
    })
}

/// A plugin's conversation as the generator's chat messages.
pub fn chat(messages: Vec<Message>) -> Vec<ChatMessage> {
    messages
        .into_iter()
        .map(|m| ChatMessage {
            role: m.role,
            content: m.content,
        })
        .collect()
}

/// Judge `response` to `prompt` by a vote of `k` samples of the refiner, retrying on a tie.
pub async fn judge_by_vote(
    engine: &Generator,
    prompts: &mut Prompts,
    prompt: &str,
    response: &str,
    cfg: &VoteConfig,
    seed: u64,
) -> Result<Option<Judgment>, GuestError> {
    let messages = chat(
        prompts
            .judge_messages(prompt, response)
            .await
            .map_err(|e| GuestError::Other(e.to_string()))?,
    );
    for attempt in 0..=cfg.tie_retries {
        let params = SamplingParams {
            n: cfg.k,
            temperature: cfg.temperature,
            top_p: cfg.top_p,
            max_new_tokens: cfg.max_new_tokens,
            seed: Some(seed.wrapping_add(attempt as u64)),
            ..SamplingParams::default()
        };
        let outs = engine
            .chat(&messages, params)
            .await
            .map_err(|e| GuestError::Model(e.to_string()))?;
        let texts: Vec<String> = outs.into_iter().map(|c| c.text).collect();
        let mut verdicts = Vec::with_capacity(texts.len());
        for t in &texts {
            verdicts.push(
                prompts
                    .parse_verdict(t)
                    .await
                    .map_err(|e| GuestError::Other(e.to_string()))?,
            );
        }
        if let Some(j) = aggregate(&texts, &verdicts) {
            return Ok(Some(j));
        }
    }
    Ok(None)
}

/// The refiner and judge of one tree, backed by the generation engine: refinements through
/// the prompts plugin's refine conversation, judgments by vote, a per-tree judgment cache,
/// and the budget (one unit per successful judgment, cached ones included — the reference's
/// accounting, see `tree_search_vectors.json`).
pub struct ModelSearchHost {
    /// Refinements come from here (the refiner).
    pub engine: Generator,
    /// Judgments by vote come from here (the refiner too, unless a judge is configured).
    pub judge: Generator,
    pub prompts: Prompts,
    pub prompt: String,
    pub vote: VoteConfig,
    pub refine: SamplingParams,
    pub budget: i32,
    pub seed: u64,
    pub constraints: Option<Constraints>,
    pub value_mode: ValueMode,
    cache: HashMap<String, Judgment>,
    calls: u64,
}

impl ModelSearchHost {
    pub fn new(
        engine: impl Into<Generator>,
        prompts: Prompts,
        prompt: &str,
        vote: VoteConfig,
        refine: SamplingParams,
        budget: i32,
        seed: u64,
    ) -> Self {
        let engine = engine.into();
        Self {
            judge: engine.clone(),
            engine,
            prompts,
            prompt: prompt.to_string(),
            vote,
            refine,
            budget,
            seed,
            constraints: None,
            value_mode: ValueMode::Vote,
            cache: HashMap::new(),
            calls: 0,
        }
    }

    /// A distinct, reproducible seed per model call of this tree.
    fn next_seed(&mut self) -> u64 {
        self.calls += 1;
        self.seed ^ self.calls.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

impl SearchHost for ModelSearchHost {
    fn refine<'a>(&'a mut self, parent: &'a Node) -> BoxFuture<'a, Result<Refinement, GuestError>> {
        Box::pin(async move {
            let messages = self
                .prompts
                .refine_messages(&self.prompt, &parent.response, &parent.critique)
                .await
                .map_err(|e| GuestError::Other(e.to_string()))?;
            let params = SamplingParams {
                n: 1,
                seed: Some(self.next_seed()),
                ..self.refine.clone()
            };
            let out = self
                .engine
                .chat(&chat(messages), params)
                .await
                .map_err(|e| GuestError::Model(e.to_string()))?;
            let output = out.into_iter().next().map(|c| c.text).unwrap_or_default();
            match self
                .prompts
                .extract_refinement(&output)
                .await
                .map_err(|e| GuestError::Other(e.to_string()))?
            {
                Some(r) if !r.trim().is_empty() => Ok(Refinement {
                    response: r,
                    output,
                }),
                _ => Err(GuestError::Model(
                    "no refined output between the markers".into(),
                )),
            }
        })
    }

    fn judge<'a>(&'a mut self, response: &'a str) -> BoxFuture<'a, Result<Judgment, GuestError>> {
        Box::pin(async move {
            if let Some(j) = self.cache.get(response) {
                self.budget -= 1;
                return Ok(Judgment {
                    cached: true,
                    ..j.clone()
                });
            }
            let seed = self.next_seed();
            let prompt = self.prompt.clone();
            match judge_response(
                &self.judge,
                &mut self.prompts,
                self.constraints.as_mut(),
                self.value_mode,
                &prompt,
                response,
                &self.vote,
                seed,
            )
            .await?
            {
                Some(j) => {
                    self.cache.insert(response.to_string(), j.clone());
                    self.budget -= 1;
                    Ok(j)
                }
                None => Err(GuestError::Model(
                    "the vote was tied after every retry".into(),
                )),
            }
        })
    }

    fn budget_left(&self) -> i32 {
        self.budget
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Verdict {
        match s {
            "y" => Verdict::Yes,
            "n" => Verdict::No,
            _ => Verdict::Unparseable,
        }
    }

    #[test]
    fn votes_follow_the_reference_rules() {
        let outs: Vec<String> = (0..5).map(|i| format!("o{i}")).collect();
        let j = aggregate(&outs, &["n", "y", "y", "?", "y"].map(v)).unwrap();
        assert_eq!((j.yes, j.no, j.unparseable), (3, 1, 1));
        assert_eq!(j.value, 0.75);
        assert_eq!(j.critique, "o1", "first sample with the majority verdict");
        let j = aggregate(&outs, &["y", "n", "n", "n", "?"].map(v)).unwrap();
        assert_eq!((j.value, j.critique.as_str()), (0.25, "o1"));
        assert!(
            aggregate(&outs, &["y", "n", "?", "?", "?"].map(v)).is_none(),
            "tie"
        );
        assert!(
            aggregate(&outs, &["?"; 5].map(v)).is_none(),
            "0 = 0 is a tie"
        );
    }
}
