//! `spar:prompts` plugin: the judge and refine conversations of SPaR (§2) and their parsing,
//! with the reference code's verdict semantics (see `judge_parse_vectors.json`).

wit_bindgen::generate!({
    world: "spar:prompts/judge-prompts@0.1.0",
    path: ["../../wit/types", "../../wit/prompts"],
    generate_all,
});

use exports::spar::prompts::prompting::Guest;
use spar::types::types::{Error, Message, PluginInfo, Role, Verdict};

/// The reference judge prompt, verbatim (typos included: the refiner was trained on it, and
/// `rft_positive_prompts` in the tree-search vectors pin it down).
const JUDGE: &str = "Please act an expert in evaluating the capabilities of instruction-following. \
In the instruction-following task, the Output needs to honestly/precisely/closely follow the given \
Prompt.\nYour task is to carefully judge whether the Output to honestly/precisely/closely follows \
the given Prompt. If there are any constraints in the Prompt that are not satisfied by the Output, \
please list all the constraints that are not satisfied.\n\nPrompt: \u{201c}{prompt}\u{201d}\n\n\
Output: \u{201c}{response}\u{201d}\n\nPlease carefully judge if each constraint is perfectly \
satisfied and give a final judgement weather the Output accurately follows the Prompt in the \
following format:\nStep-by-step verification: xxx\nFinal Judgement (if the Output accurately \
follows the Prompt): (Yes or No)";

const REFINE: &str = "Based on your judgement, refine the Output so that it honestly, \
precisely and closely follows the Prompt. Keep everything that already satisfies the Prompt \
and change only what violates it. Answer in exactly this format:\n\
Reflection on how to refine the Output: xxx\n\
Final Refined Output: [[start]] xxx [[end]]";

fn judge_text(prompt: &str, response: &str) -> String {
    JUDGE
        .replace("{prompt}", prompt)
        .replace("{response}", response)
}

fn user(content: String) -> Message {
    Message {
        role: Role::User,
        content,
    }
}

/// The reference verdict: look only at the text after the first `Final Judgement` (up to the
/// next one); `No` before the first `Yes` means no.
pub fn parse_verdict(output: &str) -> Verdict {
    const MARK: &str = "Final Judgement";
    let Some(at) = output.find(MARK) else {
        return Verdict::Unparseable;
    };
    let rest = &output[at + MARK.len()..];
    let part = match rest.find(MARK) {
        Some(next) => &rest[..next],
        None => rest,
    };
    match (part.find("Yes"), part.find("No")) {
        (None, None) => Verdict::Unparseable,
        (Some(y), Some(n)) if n < y => Verdict::No,
        (Some(_), _) => Verdict::Yes,
        (None, Some(_)) => Verdict::No,
    }
}

/// The text after the first `[[start]]`, up to the next `[[end]]` or `[[start]]` (or the
/// end), trimmed — the reference splits on both markers.
pub fn extract_refinement(output: &str) -> Option<String> {
    const START: &str = "[[start]]";
    let at = output.find(START)?;
    let rest = &output[at + START.len()..];
    let end = [rest.find("[[end]]"), rest.find(START)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rest.len());
    let body = &rest[..end];
    // An empty extraction is returned as is; the caller counts it as a failed refinement.
    Some(body.trim().to_string())
}

struct Prompts;

impl Guest for Prompts {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "spar-prompts".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "SPaR judge and refine conversations, reference verdict parsing".into(),
        }
    }

    fn judge_messages(prompt: String, response: String) -> Result<Vec<Message>, Error> {
        if prompt.trim().is_empty() {
            return Err(Error::InvalidInput("empty prompt".into()));
        }
        Ok(vec![user(judge_text(&prompt, &response))])
    }

    fn parse_verdict(output: String) -> Verdict {
        parse_verdict(&output)
    }

    fn refine_messages(
        prompt: String,
        response: String,
        critique: String,
    ) -> Result<Vec<Message>, Error> {
        if prompt.trim().is_empty() {
            return Err(Error::InvalidInput("empty prompt".into()));
        }
        Ok(vec![
            user(judge_text(&prompt, &response)),
            Message {
                role: Role::Assistant,
                content: critique,
            },
            user(REFINE.to_string()),
        ])
    }

    fn extract_refinement(output: String) -> Option<String> {
        extract_refinement(&output)
    }
}

export!(Prompts);
