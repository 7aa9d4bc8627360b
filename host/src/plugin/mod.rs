//! The plugin host: WebAssembly components run in a sandbox through wasmtime.
//!
//! One shared [`PluginHost`] owns the `Engine`, the sandbox settings and the compiled-component
//! cache. A [`Plugin`] is one loaded component whose kind was read from its exports; the typed
//! handles ([`checker::Checker`], [`prompts::Prompts`], [`taxonomy::Taxonomy`],
//! [`search::SearchStrategy`]) call it. Every call runs under a fuel budget and every instance
//! under a memory limit; after a trap the instance is dropped and the next call gets a fresh one.

pub mod cache;
pub mod checker;
pub mod conformance;
pub mod prompts;
pub mod sandbox;
pub mod search;
pub mod taxonomy;
pub mod types;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

pub use sandbox::{SandboxConfig, StoreState};

/// Errors of the plugin layer. Each names the plugin (file name, version when known, sha256).
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read or is not a component.
    #[error("plugin {path}: {message}")]
    Load { path: String, message: String },
    /// The component does not export the world it was loaded as.
    #[error("plugin {plugin}: not a {kind} plugin: {missing}")]
    WrongWorld {
        plugin: String,
        kind: PluginKind,
        missing: String,
    },
    /// A bare plugin name that matches no built plugin.
    #[error(
        "plugin `{name}` not found (looked in {searched}); build plugins with `bash scripts/setup.sh` or pass a path"
    )]
    NotFound { name: String, searched: String },
    /// The guest trapped (panic, fuel, memory, stack); the instance was discarded.
    #[error("plugin {plugin} trapped in `{func}`: {message}")]
    Trap {
        plugin: String,
        func: String,
        message: String,
    },
    /// The guest returned a typed error.
    #[error("plugin {plugin} failed in `{func}`: {error}")]
    Guest {
        plugin: String,
        func: String,
        error: GuestError,
    },
    /// The guest returned something the host refuses (too large, inconsistent, ...).
    #[error("plugin {plugin} returned an invalid result from `{func}`: {message}")]
    Invalid {
        plugin: String,
        func: String,
        message: String,
    },
}

/// The typed error a plugin can return (`spar:types/types.error`), as a host type.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum GuestError {
    InvalidInput(String),
    UnknownId(String),
    Model(String),
    BudgetExhausted,
    Other(String),
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            GuestError::UnknownId(m) => write!(f, "unknown id: {m}"),
            GuestError::Model(m) => write!(f, "model call failed: {m}"),
            GuestError::BudgetExhausted => write!(f, "budget exhausted"),
            GuestError::Other(m) => write!(f, "{m}"),
        }
    }
}

/// The plugin kinds, one per WIT world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    Checker,
    JudgePrompts,
    Taxonomy,
    SearchStrategy,
}

impl PluginKind {
    pub const ALL: [PluginKind; 4] = [
        PluginKind::Checker,
        PluginKind::JudgePrompts,
        PluginKind::Taxonomy,
        PluginKind::SearchStrategy,
    ];

    /// The world the kind implements.
    pub fn world(self) -> &'static str {
        match self {
            PluginKind::Checker => "spar:constraints/checker@0.1.0",
            PluginKind::JudgePrompts => "spar:prompts/judge-prompts@0.1.0",
            PluginKind::Taxonomy => "spar:taxonomy/taxonomy@0.1.0",
            PluginKind::SearchStrategy => "spar:search/search-strategy@0.1.0",
        }
    }

    /// The interface a component of this kind must export.
    pub fn export(self) -> &'static str {
        match self {
            PluginKind::Checker => "spar:constraints/checks@0.1.0",
            PluginKind::JudgePrompts => "spar:prompts/prompting@0.1.0",
            PluginKind::Taxonomy => "spar:taxonomy/evolution@0.1.0",
            PluginKind::SearchStrategy => "spar:search/strategy@0.1.0",
        }
    }

    /// The functions that export must carry.
    pub fn functions(self) -> &'static [&'static str] {
        match self {
            PluginKind::Checker => &["info", "list", "check", "instantiate"],
            PluginKind::JudgePrompts => &[
                "info",
                "judge-messages",
                "parse-verdict",
                "refine-messages",
                "extract-refinement",
            ],
            PluginKind::Taxonomy => &["info", "categories", "evolution-messages", "parse-evolved"],
            PluginKind::SearchStrategy => &["info", "search"],
        }
    }

    pub fn parse(s: &str) -> Option<PluginKind> {
        PluginKind::ALL.into_iter().find(|k| k.to_string() == s)
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::Checker => "checker",
            PluginKind::JudgePrompts => "judge-prompts",
            PluginKind::Taxonomy => "taxonomy",
            PluginKind::SearchStrategy => "search-strategy",
        })
    }
}

/// A plugin's description of itself (`spar:types/types.plugin-info`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub description: String,
}

/// The shared plugin runtime: one `Engine`, one `Linker`, the sandbox settings, the cache.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    linker: Linker<StoreState>,
    config: SandboxConfig,
    cache: Option<cache::ComponentCache>,
}

impl PluginHost {
    /// A host with the given sandbox settings; `cache_dir` holds compiled components.
    pub fn new(config: SandboxConfig) -> anyhow::Result<Self> {
        let mut wasm = Config::new();
        wasm.consume_fuel(true);
        wasm.max_wasm_stack(config.max_stack_bytes);
        // `SPAR_WASM_PROFILE=perfmap`: name plugin code for `perf` (/tmp/perf-PID.map).
        if std::env::var("SPAR_WASM_PROFILE").as_deref() == Ok("perfmap") {
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wasm)?;
        let mut linker = Linker::new(&engine);
        // WASI p2 is linked so components built for wasm32-wasip2 instantiate, but the context
        // each store gets grants nothing (see `sandbox::new_store`).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        search::add_to_linker(&mut linker)?;
        let cache = config
            .cache_dir
            .as_ref()
            .map(|dir| cache::ComponentCache::new(dir.clone(), &engine, &config));
        Ok(Self {
            inner: Arc::new(HostInner {
                engine,
                linker,
                config,
                cache,
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    pub(crate) fn linker(&self) -> &Linker<StoreState> {
        &self.inner.linker
    }

    /// Load a component from a file, compiling it or taking it from the cache.
    pub fn load(&self, path: &Path) -> Result<Plugin, PluginError> {
        let load_err = |message: String| PluginError::Load {
            path: path.display().to_string(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| load_err(format!("cannot read: {e}")))?;
        // An unchanged file whose compiled form is cached is neither read nor hashed again.
        let known = self.inner.cache.as_ref().and_then(|cache| {
            let sha = cache.known_sha256(path, &meta)?;
            Some((cache.get(&self.inner.engine, &sha)?, sha))
        });
        let (component, sha256) = match known {
            Some(hit) => hit,
            None => {
                let bytes =
                    std::fs::read(path).map_err(|e| load_err(format!("cannot read: {e}")))?;
                let sha256 = hex(&Sha256::digest(&bytes));
                let component = match &self.inner.cache {
                    Some(cache) => cache.get_or_compile(&self.inner.engine, &bytes, &sha256),
                    None => Component::new(&self.inner.engine, &bytes).map_err(anyhow::Error::from),
                }
                .map_err(|e| {
                    load_err(format!(
                        "not a valid WebAssembly component: {}",
                        one_line(&e)
                    ))
                })?;
                if let Some(cache) = &self.inner.cache {
                    cache.remember_sha256(path, &meta, &sha256);
                }
                (component, sha256)
            }
        };
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.inner.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let imports: Vec<String> = ty
            .imports(&self.inner.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let kind = PluginKind::ALL
            .into_iter()
            .find(|k| exports.iter().any(|e| e == k.export()));
        let file_name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Ok(Plugin {
            host: self.clone(),
            path: path.to_path_buf(),
            file_name,
            sha256,
            component,
            kind,
            exports,
            imports,
            info: None,
        })
    }

    /// Resolve `--plugin NAME_OR_PATH`: an existing path, or a bare name among the built plugins.
    pub fn resolve(name_or_path: &str) -> Result<PathBuf, PluginError> {
        let p = Path::new(name_or_path);
        if p.exists() {
            return Ok(p.to_path_buf());
        }
        let is_bare = !name_or_path.contains('/') && !name_or_path.ends_with(".wasm");
        let dirs = plugin_dirs();
        if is_bare {
            let file = format!("{}.wasm", name_or_path.replace('-', "_"));
            let alt = format!("{name_or_path}.wasm");
            for dir in &dirs {
                for f in [&file, &alt] {
                    let cand = dir.join(f);
                    if cand.exists() {
                        return Ok(cand);
                    }
                }
            }
        }
        Err(PluginError::NotFound {
            name: name_or_path.to_string(),
            searched: if is_bare {
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                "no such file".into()
            },
        })
    }
}

/// Where bare plugin names are looked up: `$SPAR_PLUGIN_PATH` (colon-separated), then the
/// `plugins/` output folder of this source tree.
pub fn plugin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(p) = std::env::var("SPAR_PLUGIN_PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    dirs.push(repo_root().join("plugins/target/wasm32-wasip2/release"));
    dirs
}

/// The source tree this binary was built from (plugins, models and data live under it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// One loaded component.
#[derive(Clone)]
pub struct Plugin {
    host: PluginHost,
    pub path: PathBuf,
    pub file_name: String,
    pub sha256: String,
    pub(crate) component: Component,
    /// The kind read from the exports; `None` when it exports no known world.
    pub kind: Option<PluginKind>,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    /// Filled in by the typed handles after the first `info()` call.
    pub info: Option<PluginInfo>,
}

impl Plugin {
    /// `name version (sha256 abcdef012345)` for messages.
    pub fn label(&self) -> String {
        let short = &self.sha256[..12.min(self.sha256.len())];
        match &self.info {
            Some(i) => format!("{} {} (sha256 {short})", i.name, i.version),
            None => format!("{} (sha256 {short})", self.file_name),
        }
    }

    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    /// Fail with one line naming what is missing unless this component implements `kind`.
    pub fn expect_kind(&self, kind: PluginKind) -> Result<(), PluginError> {
        if self.exports.iter().any(|e| e == kind.export()) {
            return Ok(());
        }
        let has = if self.exports.is_empty() {
            "it exports nothing".to_string()
        } else {
            format!("it exports {}", self.exports.join(", "))
        };
        Err(PluginError::WrongWorld {
            plugin: self.label(),
            kind,
            missing: format!(
                "world {} needs export `{}`, {has}",
                kind.world(),
                kind.export()
            ),
        })
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// [`one_line`] for wasmtime's error type.
pub(crate) fn one_line_w(e: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        push_line(&mut parts, cause.to_string());
    }
    parts.join(": ")
}

fn push_line(parts: &mut Vec<String>, s: String) {
    let s = s.lines().next().unwrap_or("").trim().to_string();
    if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
        parts.push(s);
    }
}

/// The first line of an error chain, joined: wasmtime errors span several lines.
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        push_line(&mut parts, cause.to_string());
    }
    parts.join(": ")
}
