//! The `checker` world (`spar:constraints@0.1.0`): verifiable constraint checkers.

use std::path::Path;

use wasmtime::Store;

use super::sandbox::{Handle, StoreState, World};
use super::{Plugin, PluginError, PluginHost, PluginInfo, PluginKind};

pub mod v0_1_0 {
    wasmtime::component::bindgen!({
        world: "spar:constraints/checker@0.1.0",
        path: ["../wit/types", "../wit/constraints"],
        exports: { default: async },
        with: { "spar:types/types@0.1.0": crate::plugin::types::v0_1_0 },
    });
    pub use exports::spar::constraints::checks::{Instance, InstructionSpec, Verdict};
}

impl World for v0_1_0::Checker {
    type Pre = v0_1_0::CheckerPre<StoreState>;
    const KIND: PluginKind = PluginKind::Checker;
    fn pre(plugin: &Plugin) -> wasmtime::Result<Self::Pre> {
        v0_1_0::CheckerPre::new(plugin.host().linker().instantiate_pre(&plugin.component)?)
    }
    async fn instantiate(pre: &Self::Pre, store: &mut Store<StoreState>) -> wasmtime::Result<Self> {
        pre.instantiate_async(store).await
    }
    async fn call_info(
        &self,
        store: &mut Store<StoreState>,
    ) -> wasmtime::Result<super::types::v0_1_0::PluginInfo> {
        self.spar_constraints_checks().call_info(store).await
    }
}

/// One instruction type a checker verifies.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InstructionSpec {
    pub id: String,
    pub description: String,
    /// JSON Schema of the kwargs.
    pub kwargs_schema: serde_json::Value,
}

/// Strict and loose outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    pub strict: bool,
    pub loose: bool,
}

/// An instruction drawn for building prompts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Instance {
    pub id: String,
    pub text: String,
    pub kwargs: serde_json::Map<String, serde_json::Value>,
}

/// A loaded checker plugin.
pub struct Checker {
    h: Handle<v0_1_0::Checker>,
}

impl Checker {
    /// Load `path` as a checker; fails with one line when it is another kind.
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

    pub fn label(&self) -> String {
        self.h.label()
    }

    /// Drop the live instance and start a new one (what happens after a trap).
    pub async fn fresh_instance(&mut self) -> Result<(), PluginError> {
        self.h.reset();
        self.h.live("instantiate").await.map(|_| ())
    }

    pub async fn info(&mut self) -> Result<PluginInfo, PluginError> {
        self.h.info().await
    }

    pub async fn list(&mut self) -> Result<Vec<InstructionSpec>, PluginError> {
        let live = self.h.live("list").await?;
        let r = live
            .bindings
            .spar_constraints_checks()
            .call_list(&mut live.store)
            .await;
        let specs = self.h.finish("list", r)?;
        let bytes = specs
            .iter()
            .map(|s| s.id.len() + s.description.len() + s.kwargs_schema.len())
            .sum();
        self.h.guard_output("list", bytes)?;
        let mut out = Vec::with_capacity(specs.len());
        for s in specs {
            if s.id.trim().is_empty() {
                return Err(self
                    .h
                    .invalid("list", "an instruction with an empty id".into()));
            }
            let kwargs_schema = serde_json::from_str(&s.kwargs_schema).map_err(|e| {
                self.h.invalid(
                    "list",
                    format!("kwargs schema of `{}` is not JSON: {e}", s.id),
                )
            })?;
            out.push(InstructionSpec {
                id: s.id,
                description: s.description,
                kwargs_schema,
            });
        }
        Ok(out)
    }

    /// Check one response against one instruction.
    pub async fn check(
        &mut self,
        id: &str,
        kwargs_json: &str,
        prompt: &str,
        response: &str,
    ) -> Result<Verdict, PluginError> {
        let live = self.h.live("check").await?;
        let r = live
            .bindings
            .spar_constraints_checks()
            .call_check(&mut live.store, id, kwargs_json, prompt, response)
            .await;
        match self.h.finish("check", r)? {
            Ok(v) => Ok(Verdict {
                strict: v.strict,
                loose: v.loose,
            }),
            Err(e) => Err(self.h.guest("check", e.into())),
        }
    }

    /// Draw an instance of instruction `id` from `seed`.
    pub async fn instantiate(&mut self, id: &str, seed: u64) -> Result<Instance, PluginError> {
        let live = self.h.live("instantiate").await?;
        let r = live
            .bindings
            .spar_constraints_checks()
            .call_instantiate(&mut live.store, id, seed)
            .await;
        let inst = match self.h.finish("instantiate", r)? {
            Ok(i) => i,
            Err(e) => return Err(self.h.guest("instantiate", e.into())),
        };
        self.h.guard_output(
            "instantiate",
            inst.id.len() + inst.text.len() + inst.kwargs_json.len(),
        )?;
        let kwargs = match serde_json::from_str::<serde_json::Value>(&inst.kwargs_json) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => {
                return Err(self
                    .h
                    .invalid("instantiate", "kwargs are not a JSON object".into()));
            }
            Err(e) => {
                return Err(self
                    .h
                    .invalid("instantiate", format!("kwargs are not JSON: {e}")));
            }
        };
        if inst.id != id {
            return Err(self.h.invalid(
                "instantiate",
                format!("asked for `{id}`, got an instance of `{}`", inst.id),
            ));
        }
        Ok(Instance {
            id: inst.id,
            text: inst.text,
            kwargs,
        })
    }
}

/// Several checker plugins at once: an instruction id is routed to the plugin that lists it
/// (the first one loaded wins a duplicate id), the way users combine shared checkers.
pub struct CheckerSet {
    checkers: Vec<Checker>,
    routes: std::collections::HashMap<String, usize>,
    pub specs: Vec<InstructionSpec>,
}

impl CheckerSet {
    pub async fn new(checkers: Vec<Checker>) -> Result<Self, PluginError> {
        let mut set = Self {
            checkers,
            routes: Default::default(),
            specs: Vec::new(),
        };
        for i in 0..set.checkers.len() {
            for spec in set.checkers[i].list().await? {
                if let std::collections::hash_map::Entry::Vacant(e) =
                    set.routes.entry(spec.id.clone())
                {
                    e.insert(i);
                    set.specs.push(spec);
                } else {
                    tracing::warn!(
                        "instruction `{}` of {} is already provided by {}; ignoring it",
                        spec.id,
                        set.checkers[i].label(),
                        set.checkers[set.routes[&spec.id]].label()
                    );
                }
            }
        }
        Ok(set)
    }

    /// The plugin that checks `id`.
    pub fn route(&mut self, id: &str) -> Option<&mut Checker> {
        let i = *self.routes.get(id)?;
        self.checkers.get_mut(i)
    }

    /// Check one instruction; an id no plugin lists is an error naming it.
    pub async fn check(
        &mut self,
        id: &str,
        kwargs_json: &str,
        prompt: &str,
        response: &str,
    ) -> anyhow::Result<Verdict> {
        let Some(c) = self.route(id) else {
            anyhow::bail!("no loaded checker plugin lists instruction `{id}`");
        };
        Ok(c.check(id, kwargs_json, prompt, response).await?)
    }
}
