//! The `taxonomy` world (`spar:taxonomy@0.1.0`): prompt taxonomies and evolution prompts.

use std::path::Path;

use wasmtime::Store;

use super::sandbox::{Handle, StoreState, World};
use super::types::Message;
use super::{Plugin, PluginError, PluginHost, PluginInfo, PluginKind};

pub mod v0_1_0 {
    wasmtime::component::bindgen!({
        world: "spar:taxonomy/taxonomy@0.1.0",
        path: ["../wit/types", "../wit/taxonomy"],
        exports: { default: async },
        with: { "spar:types/types@0.1.0": crate::plugin::types::v0_1_0 },
    });
}

impl World for v0_1_0::Taxonomy {
    type Pre = v0_1_0::TaxonomyPre<StoreState>;
    const KIND: PluginKind = PluginKind::Taxonomy;
    fn pre(plugin: &Plugin) -> wasmtime::Result<Self::Pre> {
        v0_1_0::TaxonomyPre::new(plugin.host().linker().instantiate_pre(&plugin.component)?)
    }
    async fn instantiate(pre: &Self::Pre, store: &mut Store<StoreState>) -> wasmtime::Result<Self> {
        pre.instantiate_async(store).await
    }
    async fn call_info(
        &self,
        store: &mut Store<StoreState>,
    ) -> wasmtime::Result<super::types::v0_1_0::PluginInfo> {
        self.spar_taxonomy_evolution().call_info(store).await
    }
}

/// One category (with subcategory) of a taxonomy and its constraint types.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Category {
    pub name: String,
    pub subcategory: String,
    /// (type name, description)
    pub types: Vec<(String, String)>,
}

impl Category {
    /// `subcategory/type` paths, the ids `evolution_messages` takes.
    pub fn type_paths(&self) -> impl Iterator<Item = String> + '_ {
        self.types
            .iter()
            .map(|(t, _)| format!("{}/{}", self.subcategory, t))
    }
}

/// A loaded taxonomy plugin.
pub struct Taxonomy {
    h: Handle<v0_1_0::Taxonomy>,
}

impl Taxonomy {
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

    pub async fn categories(&mut self) -> Result<Vec<Category>, PluginError> {
        let live = self.h.live("categories").await?;
        let r = live
            .bindings
            .spar_taxonomy_evolution()
            .call_categories(&mut live.store)
            .await;
        let cats = self.h.finish("categories", r)?;
        let bytes = cats
            .iter()
            .flat_map(|c| c.types.iter().map(|t| t.name.len() + t.description.len()))
            .sum();
        self.h.guard_output("categories", bytes)?;
        if cats.iter().any(|c| c.types.is_empty()) {
            return Err(self
                .h
                .invalid("categories", "a category without types".into()));
        }
        Ok(cats
            .into_iter()
            .map(|c| Category {
                name: c.name,
                subcategory: c.subcategory,
                types: c
                    .types
                    .into_iter()
                    .map(|t| (t.name, t.description))
                    .collect(),
            })
            .collect())
    }

    pub async fn evolution_messages(
        &mut self,
        seed: &str,
        main_type: &str,
    ) -> Result<Vec<Message>, PluginError> {
        let live = self.h.live("evolution-messages").await?;
        let r = live
            .bindings
            .spar_taxonomy_evolution()
            .call_evolution_messages(&mut live.store, seed, main_type)
            .await;
        let msgs = match self.h.finish("evolution-messages", r)? {
            Ok(m) => m,
            Err(e) => return Err(self.h.guest("evolution-messages", e.into())),
        };
        self.h.guard_output(
            "evolution-messages",
            msgs.iter().map(|m| m.content.len()).sum(),
        )?;
        if msgs.is_empty() {
            return Err(self
                .h
                .invalid("evolution-messages", "an empty conversation".into()));
        }
        Ok(msgs.into_iter().map(Message::from).collect())
    }

    /// The evolved prompt; `None` when the seed is dropped (math or coding).
    pub async fn parse_evolved(&mut self, output: &str) -> Result<Option<String>, PluginError> {
        let live = self.h.live("parse-evolved").await?;
        let r = live
            .bindings
            .spar_taxonomy_evolution()
            .call_parse_evolved(&mut live.store, output)
            .await;
        match self.h.finish("parse-evolved", r)? {
            Ok(p) => {
                self.h
                    .guard_output("parse-evolved", p.as_ref().map_or(0, |s| s.len()))?;
                Ok(p)
            }
            Err(e) => Err(self.h.guest("parse-evolved", e.into())),
        }
    }
}
