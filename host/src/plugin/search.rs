//! The `search-strategy` world (`spar:search@0.1.0`): tree search over refinements.
//!
//! The strategy is guest code that calls back into the host (`refine`, `judge`,
//! `budget-left`). Those imports are async on the host: each search runs in its own store
//! on a wasmtime fiber, so many trees run at once as tokio tasks and their model calls can
//! be batched, while the guest sees plain blocking calls.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::sandbox::{Live, StoreState, check_output_size, new_store, trap_error};
use super::types::v0_1_0 as t;
use super::{GuestError, Plugin, PluginError, PluginHost, PluginInfo, PluginKind, one_line_w};

pub mod v0_1_0 {
    wasmtime::component::bindgen!({
        world: "spar:search/search-strategy@0.1.0",
        path: ["../wit/types", "../wit/search"],
        imports: { default: async },
        exports: { default: async },
        with: { "spar:types/types@0.1.0": crate::plugin::types::v0_1_0 },
    });
    pub use exports::spar::search::strategy::{Outcome, Params, Task};
    pub use spar::search::refiner::Refinement;
}

/// A boxed future, as the [`SearchHost`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A tree node as the host keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    pub id: u32,
    pub parent: Option<u32>,
    pub depth: u32,
    pub response: String,
    pub critique: String,
    pub value: f64,
    /// The refiner output that produced this response (empty for the root).
    pub refine_output: String,
    pub visit_sequence: u32,
}

/// A judgment by vote.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Judgment {
    pub critique: String,
    pub value: f64,
    pub yes: u32,
    pub no: u32,
    pub unparseable: u32,
    pub cached: bool,
}

/// A refinement of a node's response.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Refinement {
    pub response: String,
    pub output: String,
}

/// Search settings (SPaR §3.4), paper values by default.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchParams {
    pub branch: u32,
    pub select_branch: u32,
    pub max_depth: u32,
    pub end_gate: f64,
    pub refine_attempts: u32,
}

impl Default for SearchParams {
    fn default() -> Self {
        Self {
            branch: 3,
            select_branch: 2,
            max_depth: 3,
            end_gate: 0.5,
            refine_attempts: 3,
        }
    }
}

/// The searched tree, validated.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub nodes: Vec<Node>,
    pub final_node: u32,
    pub found: bool,
}

/// What the host does for a search strategy; the pipeline implements it over the models,
/// tests over scripts.
pub trait SearchHost: Send {
    fn refine<'a>(&'a mut self, parent: &'a Node) -> BoxFuture<'a, Result<Refinement, GuestError>>;
    fn judge<'a>(&'a mut self, response: &'a str) -> BoxFuture<'a, Result<Judgment, GuestError>>;
    fn budget_left(&self) -> i32;
    /// Lets the caller take its own type back after the search.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}

pub type SearchHostBox = Box<dyn SearchHost>;

impl From<t::Node> for Node {
    fn from(n: t::Node) -> Self {
        Node {
            id: n.id,
            parent: n.parent,
            depth: n.depth,
            response: n.response,
            critique: n.critique,
            value: n.value,
            refine_output: n.refine_output,
            visit_sequence: n.visit_sequence,
        }
    }
}

impl From<&Node> for t::Node {
    fn from(n: &Node) -> Self {
        t::Node {
            id: n.id,
            parent: n.parent,
            depth: n.depth,
            response: n.response.clone(),
            critique: n.critique.clone(),
            value: n.value,
            refine_output: n.refine_output.clone(),
            visit_sequence: n.visit_sequence,
        }
    }
}

fn no_host() -> t::Error {
    t::Error::Other("this store has no search host".into())
}

impl v0_1_0::spar::search::refiner::Host for StoreState {
    async fn refine(&mut self, parent: t::Node) -> Result<v0_1_0::Refinement, t::Error> {
        let host = self.search.as_mut().ok_or_else(no_host)?;
        let parent = Node::from(parent);
        match host.refine(&parent).await {
            Ok(r) => Ok(v0_1_0::Refinement {
                response: r.response,
                output: r.output,
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn judge(&mut self, response: String) -> Result<t::Judgment, t::Error> {
        let host = self.search.as_mut().ok_or_else(no_host)?;
        match host.judge(&response).await {
            Ok(j) => Ok(t::Judgment {
                critique: j.critique,
                value: j.value,
                yes: j.yes,
                no: j.no,
                unparseable: j.unparseable,
                cached: j.cached,
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn budget_left(&mut self) -> i32 {
        self.search.as_ref().map_or(0, |h| h.budget_left())
    }
}

impl t::Host for StoreState {}

/// Link the `refiner` imports into the shared linker.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    v0_1_0::SearchStrategy::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |s| s)
}

/// A loaded search strategy. Cheap to clone; every `search` runs in a fresh instance, so
/// searches run concurrently and a trap in one tree touches no other.
#[derive(Clone)]
pub struct SearchStrategy {
    plugin: Arc<Plugin>,
    pre: v0_1_0::SearchStrategyPre<StoreState>,
}

/// A no-op host for calls that make no model calls (`info`).
struct NoHost;

impl SearchHost for NoHost {
    fn refine<'a>(&'a mut self, _: &'a Node) -> BoxFuture<'a, Result<Refinement, GuestError>> {
        Box::pin(async { Err(GuestError::Other("no refiner during info".into())) })
    }
    fn judge<'a>(&'a mut self, _: &'a str) -> BoxFuture<'a, Result<Judgment, GuestError>> {
        Box::pin(async { Err(GuestError::Other("no judge during info".into())) })
    }
    fn budget_left(&self) -> i32 {
        0
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

impl SearchStrategy {
    pub async fn load(host: &PluginHost, path: &Path) -> Result<Self, PluginError> {
        Self::from_plugin(host.load(path)?).await
    }

    pub async fn from_plugin(mut plugin: Plugin) -> Result<Self, PluginError> {
        plugin.expect_kind(PluginKind::SearchStrategy)?;
        let pre = plugin
            .host()
            .linker()
            .instantiate_pre(&plugin.component)
            .and_then(v0_1_0::SearchStrategyPre::new)
            .map_err(|e| PluginError::Load {
                path: plugin.path.display().to_string(),
                message: format!("cannot link as search-strategy: {}", one_line_w(&e)),
            })?;
        let mut s = Self {
            plugin: Arc::new(plugin.clone()),
            pre,
        };
        let info = s.info().await?;
        plugin.info = Some(info);
        s.plugin = Arc::new(plugin);
        Ok(s)
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    async fn live(
        &self,
        func: &str,
        host: SearchHostBox,
    ) -> Result<Live<v0_1_0::SearchStrategy>, PluginError> {
        let cfg = self.plugin.host().config();
        let mut store = new_store(&self.plugin, Some(host))?;
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| trap_error(&self.plugin.label(), "instantiate", &e, cfg, ""))?;
        let mut live = Live::new(store, bindings);
        live.arm(cfg.fuel_per_call).map_err(|e| PluginError::Trap {
            plugin: self.plugin.label(),
            func: func.into(),
            message: one_line_w(&e),
        })?;
        Ok(live)
    }

    fn finish<T>(
        &self,
        live: &mut Live<v0_1_0::SearchStrategy>,
        func: &str,
        r: wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        let label = self.plugin.label();
        let log = live.drain_log(&label);
        r.map_err(|e| trap_error(&label, func, &e, self.plugin.host().config(), &log))
    }

    pub async fn info(&self) -> Result<PluginInfo, PluginError> {
        let mut live = self.live("info", Box::new(NoHost)).await?;
        let r = live
            .bindings
            .spar_search_strategy()
            .call_info(&mut live.store)
            .await;
        let info = self.finish(&mut live, "info", r)?;
        Ok(info.into())
    }

    /// Search one tree with `host` answering the model calls; gives `host` back with the outcome.
    pub async fn search(
        &self,
        prompt: &str,
        root: &Node,
        params: &SearchParams,
        host: SearchHostBox,
    ) -> (Result<Outcome, PluginError>, Option<SearchHostBox>) {
        let mut live = match self.live("search", host).await {
            Ok(l) => l,
            Err(e) => return (Err(e), None),
        };
        let task = v0_1_0::Task {
            prompt: prompt.to_string(),
            root: root.into(),
            params: v0_1_0::Params {
                branch: params.branch,
                select_branch: params.select_branch,
                max_depth: params.max_depth,
                end_gate: params.end_gate,
                refine_attempts: params.refine_attempts,
            },
        };
        let r = live
            .bindings
            .spar_search_strategy()
            .call_search(&mut live.store, &task)
            .await;
        let result = self.finish(&mut live, "search", r).and_then(|r| match r {
            Ok(o) => self.validate(o, root, params),
            Err(e) => Err(PluginError::Guest {
                plugin: self.plugin.label(),
                func: "search".into(),
                error: e.into(),
            }),
        });
        (result, live.store.data_mut().search.take())
    }

    fn validate(
        &self,
        o: v0_1_0::Outcome,
        root: &Node,
        params: &SearchParams,
    ) -> Result<Outcome, PluginError> {
        let label = self.plugin.label();
        let bytes = o
            .nodes
            .iter()
            .map(|n| n.response.len() + n.critique.len() + n.refine_output.len())
            .sum();
        check_output_size(&label, "search", bytes, self.plugin.host().config())?;
        let invalid = |message: String| PluginError::Invalid {
            plugin: label.clone(),
            func: "search".into(),
            message,
        };
        let nodes: Vec<Node> = o.nodes.into_iter().map(Node::from).collect();
        let Some(first) = nodes.first() else {
            return Err(invalid("an empty tree".into()));
        };
        if first.parent.is_some() || first.response != root.response {
            return Err(invalid("node 0 is not the task's root".into()));
        }
        for (i, n) in nodes.iter().enumerate().skip(1) {
            let Some(p) = n
                .parent
                .filter(|&p| (p as usize) < nodes.len() && p as usize != i)
            else {
                return Err(invalid(format!("node {i} has no valid parent")));
            };
            if n.depth != nodes[p as usize].depth + 1 || n.depth > params.max_depth {
                return Err(invalid(format!("node {i} has depth {}", n.depth)));
            }
            if !(0.0..=1.0).contains(&n.value) || n.value.is_nan() {
                return Err(invalid(format!("node {i} has value {}", n.value)));
            }
        }
        let Some(fin) = nodes.get(o.final_node as usize) else {
            return Err(invalid(format!(
                "final node {} is not in the tree",
                o.final_node
            )));
        };
        if o.found != (fin.value > params.end_gate) {
            return Err(invalid(format!(
                "found = {} but the final node's value is {}",
                o.found, fin.value
            )));
        }
        Ok(Outcome {
            nodes,
            final_node: o.final_node,
            found: o.found,
        })
    }
}
