//! The `judge-prompts` world (`spar:prompts@0.1.0`): the refiner's conversations and parsing.

use std::path::Path;

use wasmtime::Store;

use super::sandbox::{Handle, StoreState, World};
use super::types::Message;
use super::{Plugin, PluginError, PluginHost, PluginInfo, PluginKind};

pub mod v0_1_0 {
    wasmtime::component::bindgen!({
        world: "spar:prompts/judge-prompts@0.1.0",
        path: ["../wit/types", "../wit/prompts"],
        exports: { default: async },
        with: { "spar:types/types@0.1.0": crate::plugin::types::v0_1_0 },
    });
}

impl World for v0_1_0::JudgePrompts {
    type Pre = v0_1_0::JudgePromptsPre<StoreState>;
    const KIND: PluginKind = PluginKind::JudgePrompts;
    fn pre(plugin: &Plugin) -> wasmtime::Result<Self::Pre> {
        v0_1_0::JudgePromptsPre::new(plugin.host().linker().instantiate_pre(&plugin.component)?)
    }
    async fn instantiate(pre: &Self::Pre, store: &mut Store<StoreState>) -> wasmtime::Result<Self> {
        pre.instantiate_async(store).await
    }
    async fn call_info(
        &self,
        store: &mut Store<StoreState>,
    ) -> wasmtime::Result<super::types::v0_1_0::PluginInfo> {
        self.spar_prompts_prompting().call_info(store).await
    }
}

/// A parsed judge verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Yes,
    No,
    Unparseable,
}

impl Verdict {
    /// The reference code's encoding: 1, 0, -1.
    pub fn as_i8(self) -> i8 {
        match self {
            Verdict::Yes => 1,
            Verdict::No => 0,
            Verdict::Unparseable => -1,
        }
    }
}

/// A loaded judge-prompts plugin.
pub struct Prompts {
    h: Handle<v0_1_0::JudgePrompts>,
}

fn message_bytes(m: &[super::types::v0_1_0::Message]) -> usize {
    m.iter().map(|m| m.content.len()).sum()
}

impl Prompts {
    pub async fn load(host: &PluginHost, path: &Path) -> Result<Self, PluginError> {
        Self::from_plugin(host.load(path)?).await
    }

    pub async fn from_plugin(plugin: Plugin) -> Result<Self, PluginError> {
        Ok(Self {
            h: Handle::open(plugin).await?,
        })
    }

    pub fn plugin(&self) -> &Plugin {
        &self.h.plugin
    }

    pub async fn info(&mut self) -> Result<PluginInfo, PluginError> {
        self.h.info().await
    }

    pub async fn judge_messages(
        &mut self,
        prompt: &str,
        response: &str,
    ) -> Result<Vec<Message>, PluginError> {
        let live = self.h.live("judge-messages").await?;
        let r = live
            .bindings
            .spar_prompts_prompting()
            .call_judge_messages(&mut live.store, prompt, response)
            .await;
        self.messages("judge-messages", r)
    }

    pub async fn refine_messages(
        &mut self,
        prompt: &str,
        response: &str,
        critique: &str,
    ) -> Result<Vec<Message>, PluginError> {
        let live = self.h.live("refine-messages").await?;
        let r = live
            .bindings
            .spar_prompts_prompting()
            .call_refine_messages(&mut live.store, prompt, response, critique)
            .await;
        self.messages("refine-messages", r)
    }

    fn messages(
        &mut self,
        func: &str,
        r: wasmtime::Result<
            Result<Vec<super::types::v0_1_0::Message>, super::types::v0_1_0::Error>,
        >,
    ) -> Result<Vec<Message>, PluginError> {
        let msgs = match self.h.finish(func, r)? {
            Ok(m) => m,
            Err(e) => return Err(self.h.guest(func, e.into())),
        };
        self.h.guard_output(func, message_bytes(&msgs))?;
        if msgs.is_empty() {
            return Err(self.h.invalid(func, "an empty conversation".into()));
        }
        Ok(msgs.into_iter().map(Message::from).collect())
    }

    pub async fn parse_verdict(&mut self, output: &str) -> Result<Verdict, PluginError> {
        let live = self.h.live("parse-verdict").await?;
        let r = live
            .bindings
            .spar_prompts_prompting()
            .call_parse_verdict(&mut live.store, output)
            .await;
        use super::types::v0_1_0::Verdict as V;
        Ok(match self.h.finish("parse-verdict", r)? {
            V::Yes => Verdict::Yes,
            V::No => Verdict::No,
            V::Unparseable => Verdict::Unparseable,
        })
    }

    /// The extracted refinement, as the plugin gives it: `None` without markers; an empty
    /// string is a failed refinement for the caller to count.
    pub async fn extract_refinement(
        &mut self,
        output: &str,
    ) -> Result<Option<String>, PluginError> {
        let live = self.h.live("extract-refinement").await?;
        let r = live
            .bindings
            .spar_prompts_prompting()
            .call_extract_refinement(&mut live.store, output)
            .await;
        let out = self.h.finish("extract-refinement", r)?;
        self.h
            .guard_output("extract-refinement", out.as_ref().map_or(0, |s| s.len()))?;
        Ok(out)
    }
}
