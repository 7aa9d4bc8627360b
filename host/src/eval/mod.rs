//! Benchmarks of instruction following: IFEval, FollowBench, LLMBar, refinement accuracy, and
//! the per-run report.

pub mod followbench;
pub mod ifeval;
pub mod llmbar;
pub mod refine;
pub mod report;

use crate::backend::Generator;
use crate::model::generate::SamplingParams;
use crate::model::tokenizer::ChatMessage;

/// The first completion of each conversation, `concurrency` in flight at once (the engine
/// batches them); `progress` is called after each. A failed call is that item's error.
pub async fn chat_all(
    generator: &Generator,
    conversations: Vec<Vec<ChatMessage>>,
    params: &SamplingParams,
    concurrency: usize,
    progress: impl Fn(),
) -> Vec<Result<String, String>> {
    use futures_util::StreamExt;
    let calls = conversations.into_iter().map(|c| {
        let (g, p) = (generator.clone(), params.clone());
        async move {
            g.chat(&c, SamplingParams { n: 1, ..p })
                .await
                .map(|v| v.into_iter().next().map(|c| c.text).unwrap_or_default())
                .map_err(|e| e.to_string())
        }
    });
    futures_util::stream::iter(calls)
        .buffered(concurrency.max(1))
        .inspect(|_| progress())
        .collect()
        .await
}

/// Mean of the finite values; NaN for none.
pub fn mean(v: impl IntoIterator<Item = f64>) -> f64 {
    let (s, n) = v
        .into_iter()
        .filter(|x| x.is_finite())
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}
