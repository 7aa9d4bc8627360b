//! `spar:prompts` plugin: the judge and refine conversations of SPaR (§2) and their parsing,
//! with the reference code's verdict semantics (see `judge_parse_vectors.json`).

wit_bindgen::generate!({
    world: "spar:prompts/judge-prompts@0.1.0",
    path: ["../../wit/types", "../../wit/prompts"],
});

use exports::spar::prompts::prompting::Guest;
use spar::types::types::{Error, Message, PluginInfo, Role, Verdict};

const JUDGE: &str = "Please act as an expert in evaluating how well an Output follows the \
instructions in a Prompt. The Output must honestly, precisely and closely follow every \
constraint of the Prompt.\n\
Judge carefully whether the Output follows the given Prompt. If any constraints of the \
Prompt are not satisfied by the Output, list every one of them.\n\
Prompt: \u{201c}{prompt}\u{201d}\n\
Output: \u{201c}{response}\u{201d}\n\
Check each constraint one by one, then give a final judgement on whether the Output \
accurately follows the Prompt, in exactly this format:\n\
Step-by-step verification: xxx\n\
Final Judgement (if the Output accurately follows the Prompt): (Yes or No)";

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

/// The text between the first `[[start]]` and the next `[[end]]` (or the end), trimmed.
pub fn extract_refinement(output: &str) -> Option<String> {
    const START: &str = "[[start]]";
    let at = output.find(START)?;
    let rest = &output[at + START.len()..];
    let body = match rest.find("[[end]]") {
        Some(end) => &rest[..end],
        None => rest,
    };
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
