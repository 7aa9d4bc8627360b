//! Refinement accuracy: the share of refinements of held-out failing responses that pass
//! their verifiable constraints.
//!
//! A response fails when a checker rejects one of its prompt's constraints (strict). The
//! refiner then does what it does in the tree search: judges the response (one greedy sample
//! of the judge conversation of the prompts plugin), and refines it given that critique (the
//! refine conversation; the text between the markers is the refinement). The refinement is
//! checked again; it counts only if every constraint passes. A refinement the prompts plugin
//! cannot extract counts as a failure.

use serde::Serialize;

use crate::backend::Generator;
use crate::model::generate::SamplingParams;
use crate::plugin::checker::CheckerSet;
use crate::plugin::prompts::Prompts;
use crate::score::Row;
use crate::selfplay::judge::chat;

/// Whether every constraint of `row` passes for `response` (strict).
pub async fn passes(set: &mut CheckerSet, row: &Row, response: &str) -> anyhow::Result<bool> {
    for (id, kwargs) in &row.instructions {
        let v = set
            .check(
                id,
                &serde_json::Value::Object(kwargs.clone()).to_string(),
                &row.prompt,
                response,
            )
            .await?;
        if !v.strict {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One refined response.
#[derive(Debug, Clone, Serialize)]
pub struct Refined {
    pub line: usize,
    pub prompt: String,
    pub response: String,
    pub critique: String,
    pub refinement: Option<String>,
    pub passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Judge, refine and re-check one failing response.
pub async fn refine_one(
    refiner: &Generator,
    prompts: &mut Prompts,
    set: &mut CheckerSet,
    row: &Row,
    params: &SamplingParams,
) -> Refined {
    let mut r = Refined {
        line: row.line,
        prompt: row.prompt.clone(),
        response: row.response.clone(),
        critique: String::new(),
        refinement: None,
        passed: false,
        error: None,
    };
    let step = async {
        let judge = chat(prompts.judge_messages(&row.prompt, &row.response).await?);
        let p = SamplingParams {
            n: 1,
            ..params.clone()
        };
        let critique = refiner
            .chat(&judge, p.clone())
            .await?
            .into_iter()
            .next()
            .map(|c| c.text)
            .unwrap_or_default();
        r.critique = critique.clone();
        let refine = chat(
            prompts
                .refine_messages(&row.prompt, &row.response, &critique)
                .await?,
        );
        let out = refiner
            .chat(&refine, p)
            .await?
            .into_iter()
            .next()
            .map(|c| c.text)
            .unwrap_or_default();
        anyhow::Ok(
            prompts
                .extract_refinement(&out)
                .await?
                .filter(|s| !s.trim().is_empty()),
        )
    };
    match step.await {
        Ok(Some(text)) => {
            match passes(set, row, &text).await {
                Ok(p) => r.passed = p,
                Err(e) => r.error = Some(e.to_string()),
            }
            r.refinement = Some(text);
        }
        Ok(None) => r.error = Some("no refinement between the markers".into()),
        Err(e) => r.error = Some(e.to_string()),
    }
    r
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    /// Responses checked.
    pub responses: usize,
    /// Of them, failing (the held-out set refined).
    pub failing: usize,
    pub refined_passing: usize,
    /// Percent of failing responses whose refinement passes.
    pub accuracy: f64,
    /// Refinements that could not be extracted.
    pub unextracted: usize,
}

pub fn metrics(responses: usize, refined: &[Refined]) -> Metrics {
    let ok = refined.iter().filter(|r| r.passed).count();
    Metrics {
        responses,
        failing: refined.len(),
        refined_passing: ok,
        accuracy: if refined.is_empty() {
            f64::NAN
        } else {
            100.0 * ok as f64 / refined.len() as f64
        },
        unextracted: refined.iter().filter(|r| r.refinement.is_none()).count(),
    }
}

pub fn render(m: &Metrics) -> String {
    format!(
        "refinement accuracy: {:.1}% ({} of {} failing responses refined to pass; {} responses checked, {} refinements not extracted)\n",
        m.accuracy, m.refined_passing, m.failing, m.responses, m.unextracted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_by_hand() {
        let r = |passed, refinement: Option<&str>| Refined {
            line: 1,
            prompt: String::new(),
            response: String::new(),
            critique: String::new(),
            refinement: refinement.map(String::from),
            passed,
            error: None,
        };
        let m = metrics(
            10,
            &[
                r(true, Some("a")),
                r(false, Some("b")),
                r(false, None),
                r(true, Some("c")),
            ],
        );
        assert_eq!((m.failing, m.refined_passing, m.unextracted), (4, 2, 1));
        assert_eq!(m.accuracy, 50.0);
        assert!(metrics(3, &[]).accuracy.is_nan());
    }
}
