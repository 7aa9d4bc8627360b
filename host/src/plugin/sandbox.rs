//! Per-store sandbox: a WASI context that grants nothing, memory limits, fuel per call,
//! captured guest output, and turning traps into one-line errors.

use std::path::PathBuf;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::{Plugin, PluginError, one_line_w, search::SearchHostBox};

/// Limits applied to every plugin instance and call.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Fuel (roughly, wasm instructions) granted to each call; an endless loop traps here.
    pub fuel_per_call: u64,
    /// Linear-memory limit per instance, in bytes.
    pub memory_limit_bytes: usize,
    /// Wasm stack limit, in bytes (deep recursion traps here).
    pub max_stack_bytes: usize,
    /// Largest total of strings a call may return, in bytes.
    pub max_output_bytes: usize,
    /// Bytes of guest stdout/stderr kept per instance (more traps the guest).
    pub max_log_bytes: usize,
    /// Compiled-component cache; `None` compiles every load.
    pub cache_dir: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            fuel_per_call: 2_000_000_000,
            memory_limit_bytes: 256 << 20,
            max_stack_bytes: 512 << 10,
            max_output_bytes: 4 << 20,
            max_log_bytes: 256 << 10,
            cache_dir: Some(default_cache_dir()),
        }
    }
}

impl SandboxConfig {
    /// Read a TOML file; unknown keys and bad values are errors naming the file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(":{}", text[..s.start].matches('\n').count() + 1))
                .unwrap_or_default();
            anyhow::anyhow!("{}{at}: {}", path.display(), e.message())
        })
    }
}

/// `$SPAR_CACHE_DIR`, else `$XDG_CACHE_HOME/spar/components`, else `~/.cache/spar/components`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SPAR_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("spar").join("components")
}

/// The data of every plugin store.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    pub(crate) output: MemoryOutputPipe,
    /// The model calls a search strategy makes (only set for search plugins).
    pub(crate) search: Option<SearchHostBox>,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A store whose WASI context grants nothing: no preopened directories, no environment, no
/// arguments, empty stdin, no sockets or name lookup. Guest stdout and stderr go to a bounded
/// in-memory pipe that the host forwards to tracing after each call.
pub(crate) fn new_store(
    plugin: &Plugin,
    search: Option<SearchHostBox>,
) -> Result<Store<StoreState>, PluginError> {
    let cfg = plugin.host().config();
    let output = MemoryOutputPipe::new(cfg.max_log_bytes);
    let wasi = WasiCtxBuilder::new()
        .stdout(output.clone())
        .stderr(output.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build();
    let limits = StoreLimitsBuilder::new()
        .memory_size(cfg.memory_limit_bytes)
        .trap_on_grow_failure(true)
        .instances(64)
        .memories(16)
        .tables(64)
        .build();
    let mut store = Store::new(
        plugin.host().engine(),
        StoreState {
            wasi,
            table: ResourceTable::new(),
            limits,
            output,
            search,
        },
    );
    store.limiter(|s| &mut s.limits);
    // Instantiation runs guest code too (start functions, static initialisers).
    store
        .set_fuel(cfg.fuel_per_call)
        .map_err(|e| PluginError::Load {
            path: plugin.path.display().to_string(),
            message: one_line_w(&e),
        })?;
    Ok(store)
}

/// A live instance of some world's bindings, and how much of its output was forwarded.
pub(crate) struct Live<B> {
    pub store: Store<StoreState>,
    pub bindings: B,
    log_seen: usize,
}

impl<B> Live<B> {
    pub fn new(store: Store<StoreState>, bindings: B) -> Self {
        Self {
            store,
            bindings,
            log_seen: 0,
        }
    }

    /// Refill the fuel tank before a call.
    pub fn arm(&mut self, fuel: u64) -> wasmtime::Result<()> {
        self.store.set_fuel(fuel)
    }

    /// Forward new guest output to tracing; returns the new text.
    pub fn drain_log(&mut self, label: &str) -> String {
        let all = self.store.data().output.contents();
        if all.len() <= self.log_seen {
            return String::new();
        }
        let new = String::from_utf8_lossy(&all[self.log_seen..]).into_owned();
        self.log_seen = all.len();
        for line in new.lines().filter(|l| !l.trim().is_empty()) {
            tracing::warn!(target: "spar::plugin", plugin = label, "{line}");
        }
        new
    }
}

/// Turn a wasmtime error from a call into a one-line, plugin-named [`PluginError::Trap`].
pub(crate) fn trap_error(
    plugin_label: &str,
    func: &str,
    err: &wasmtime::Error,
    cfg: &SandboxConfig,
    guest_log: &str,
) -> PluginError {
    let message = match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => format!(
            "ran out of fuel ({} units per call): endless or too long computation",
            cfg.fuel_per_call
        ),
        Some(Trap::StackOverflow) => format!(
            "stack overflow (limit {} KiB): recursion too deep",
            cfg.max_stack_bytes >> 10
        ),
        Some(Trap::UnreachableCodeReached) => {
            "aborted (wasm `unreachable`: a panic or abort in the guest)".to_string()
        }
        Some(t) => t.to_string(),
        None => {
            let s = one_line_w(err);
            if s.contains("forcing trap when growing memory") || s.contains("memory.grow") {
                format!(
                    "memory limit of {} MiB exceeded",
                    cfg.memory_limit_bytes >> 20
                )
            } else {
                s
            }
        }
    };
    // A panic message is the most useful thing a guest says; keep its last lines.
    let tail: Vec<&str> = guest_log.lines().filter(|l| !l.trim().is_empty()).collect();
    let message = if tail.is_empty() {
        message
    } else {
        let from = tail.len().saturating_sub(2);
        format!("{message}; guest said: {}", tail[from..].join(" | "))
    };
    PluginError::Trap {
        plugin: plugin_label.to_string(),
        func: func.to_string(),
        message,
    }
}

/// Guard returned strings: a plugin must not flood the host.
pub(crate) fn check_output_size(
    plugin_label: &str,
    func: &str,
    bytes: usize,
    cfg: &SandboxConfig,
) -> Result<(), PluginError> {
    if bytes > cfg.max_output_bytes {
        return Err(PluginError::Invalid {
            plugin: plugin_label.to_string(),
            func: func.to_string(),
            message: format!(
                "returned {:.1} MiB, over the limit of {:.1} MiB",
                bytes as f64 / (1 << 20) as f64,
                cfg.max_output_bytes as f64 / (1 << 20) as f64
            ),
        });
    }
    Ok(())
}

/// The bindings of one world, instantiated from a pre-linked component.
pub(crate) trait World: Sized + Send + 'static {
    type Pre: Send + Sync + 'static;
    const KIND: super::PluginKind;
    fn pre(plugin: &Plugin) -> wasmtime::Result<Self::Pre>;
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<StoreState>,
    ) -> impl std::future::Future<Output = wasmtime::Result<Self>> + Send;
    /// The world's `info` export.
    fn call_info(
        &self,
        store: &mut Store<StoreState>,
    ) -> impl std::future::Future<Output = wasmtime::Result<super::types::v0_1_0::PluginInfo>> + Send;
}

/// A plugin of one kind with at most one live instance, replaced after any trap.
pub(crate) struct Handle<W: World> {
    pub plugin: Plugin,
    pre: W::Pre,
    live: Option<Live<W>>,
}

impl<W: World> Handle<W> {
    pub fn new(plugin: Plugin) -> Result<Self, PluginError> {
        plugin.expect_kind(W::KIND)?;
        let pre = W::pre(&plugin).map_err(|e| PluginError::Load {
            path: plugin.path.display().to_string(),
            message: format!("cannot link as {}: {}", W::KIND, one_line_w(&e)),
        })?;
        Ok(Self {
            plugin,
            pre,
            live: None,
        })
    }

    /// Load as this world and ask the plugin for its name and version (used in every error).
    pub async fn open(plugin: Plugin) -> Result<Self, PluginError> {
        let mut h = Self::new(plugin)?;
        let info = h.info().await?;
        h.plugin.info = Some(info);
        Ok(h)
    }

    pub async fn info(&mut self) -> Result<super::PluginInfo, PluginError> {
        let live = self.live("info").await?;
        let r = live.bindings.call_info(&mut live.store).await;
        let info = self.finish("info", r)?;
        self.guard_output(
            "info",
            info.name.len() + info.version.len() + info.description.len(),
        )?;
        Ok(info.into())
    }

    /// Drop the live instance; the next call instantiates a fresh one.
    pub fn reset(&mut self) {
        self.live = None;
    }

    /// The live instance (instantiated on demand), armed with a fresh fuel budget.
    pub async fn live(&mut self, func: &str) -> Result<&mut Live<W>, PluginError> {
        if self.live.is_none() {
            let mut store = new_store(&self.plugin, None)?;
            let bindings = W::instantiate(&self.pre, &mut store).await.map_err(|e| {
                trap_error(
                    &self.plugin.label(),
                    "instantiate",
                    &e,
                    self.plugin.host().config(),
                    "",
                )
            })?;
            self.live = Some(Live::new(store, bindings));
        }
        let fuel = self.plugin.host().config().fuel_per_call;
        let live = self.live.as_mut().expect("instantiated above");
        live.arm(fuel).map_err(|e| PluginError::Trap {
            plugin: self.plugin.label(),
            func: func.to_string(),
            message: one_line_w(&e),
        })?;
        Ok(live)
    }

    /// Forward guest output; on a trap drop the instance so the next call starts fresh.
    pub fn finish<T>(&mut self, func: &str, r: wasmtime::Result<T>) -> Result<T, PluginError> {
        let label = self.plugin.label();
        let log = self
            .live
            .as_mut()
            .map(|l| l.drain_log(&label))
            .unwrap_or_default();
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                self.live = None;
                Err(trap_error(
                    &label,
                    func,
                    &e,
                    self.plugin.host().config(),
                    &log,
                ))
            }
        }
    }

    pub fn label(&self) -> String {
        self.plugin.label()
    }

    /// A typed error the guest returned, tagged with the plugin.
    pub fn guest(&self, func: &str, error: super::GuestError) -> PluginError {
        PluginError::Guest {
            plugin: self.label(),
            func: func.into(),
            error,
        }
    }

    /// A result the host refuses, tagged with the plugin.
    pub fn invalid(&self, func: &str, message: String) -> PluginError {
        PluginError::Invalid {
            plugin: self.label(),
            func: func.into(),
            message,
        }
    }

    pub fn guard_output(&mut self, func: &str, bytes: usize) -> Result<(), PluginError> {
        let r = check_output_size(&self.label(), func, bytes, self.plugin.host().config());
        if r.is_err() {
            // The instance may hold more of the same; start clean.
            self.live = None;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_reads_the_shipped_defaults_and_names_bad_lines() {
        let shipped = crate::plugin::repo_root().join("configs/sandbox.toml");
        let c = SandboxConfig::from_file(&shipped).unwrap();
        let d = SandboxConfig::default();
        assert_eq!(
            (
                c.fuel_per_call,
                c.memory_limit_bytes,
                c.max_stack_bytes,
                c.max_output_bytes
            ),
            (
                d.fuel_per_call,
                d.memory_limit_bytes,
                d.max_stack_bytes,
                d.max_output_bytes
            )
        );
        let dir = std::env::temp_dir().join(format!("spar-sbx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "fuel_per_call = 10\nmemory_limit = 5\n").unwrap();
        let e = SandboxConfig::from_file(&bad).unwrap_err().to_string();
        assert!(
            e.contains("bad.toml:2") && e.contains("memory_limit"),
            "{e}"
        );
    }
}
