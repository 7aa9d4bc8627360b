//! On-disk cache of compiled components.
//!
//! A precompiled `.cwasm` is only valid for the exact wasmtime version and engine settings
//! that produced it, and deserializing one is `unsafe` (it is trusted native code). So the
//! key is the plugin's sha256 plus a hash of the wasmtime version and the engine's
//! compatibility hash, and only files this cache wrote itself are ever deserialized.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::SandboxConfig;

pub struct ComponentCache {
    dir: PathBuf,
    engine_key: String,
}

impl ComponentCache {
    pub fn new(dir: PathBuf, engine: &Engine, config: &SandboxConfig) -> Self {
        // SipHash with fixed keys: stable for one build of the host, which is all a
        // cache entry must match (the wasmtime version is part of the key anyway).
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new();
        "wasmtime-48.0.8".hash(&mut h);
        engine.precompile_compatibility_hash().hash(&mut h);
        config.max_stack_bytes.hash(&mut h);
        Self {
            dir,
            engine_key: format!("{:016x}", h.finish()),
        }
    }

    /// The cache file of a plugin with this sha256.
    pub fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The sha256 recorded for the plugin file at `path` when its size and modification time
    /// are the ones recorded with it: a cached load then neither reads nor hashes the file.
    pub fn known_sha256(&self, path: &Path, meta: &std::fs::Metadata) -> Option<String> {
        let text = std::fs::read_to_string(self.stamp_path(path)?).ok()?;
        let (stamp, sha) = text.trim().split_once(' ')?;
        (stamp == stamp_of(meta)?).then(|| sha.to_string())
    }

    /// Record the sha256 of the file at `path` with its size and modification time.
    pub fn remember_sha256(&self, path: &Path, meta: &std::fs::Metadata, sha256: &str) {
        let (Some(file), Some(stamp)) = (self.stamp_path(path), stamp_of(meta)) else {
            return;
        };
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(file.parent().expect("stamps dir"))?;
            let tmp = file.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, format!("{stamp} {sha256}\n"))?;
            std::fs::rename(&tmp, &file)
        };
        if let Err(e) = write() {
            tracing::warn!("cannot write {}: {e}", file.display());
        }
    }

    fn stamp_path(&self, path: &Path) -> Option<PathBuf> {
        let canonical = path.canonicalize().ok()?;
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new();
        canonical.hash(&mut h);
        Some(self.dir.join("stamps").join(format!("{:016x}", h.finish())))
    }

    /// The component cached for this sha256, if any (never compiles).
    pub fn get(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let cached = std::fs::read(self.path_for(sha256)).ok()?;
        // SAFETY: as in `get_or_compile`: only files this cache wrote, header checked.
        unsafe { Component::deserialize(engine, &cached) }.ok()
    }

    /// The compiled component: deserialized from the cache when present, else compiled and
    /// stored (write to a temporary file, then rename, so a reader never sees half a file).
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> anyhow::Result<Component> {
        let path = self.path_for(sha256);
        // Read into memory rather than mmap: a file rewritten in place by another process
        // would otherwise crash this one (SIGBUS) while the component is alive.
        if let Ok(cached) = std::fs::read(&path) {
            // SAFETY: the file was written by `store` below from `Component::serialize` of an
            // engine with the same version and settings (both are in the file name), and
            // wasmtime checks its header before use.
            match unsafe { Component::deserialize(engine, &cached) } {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!(
                    "ignoring unusable cache entry {}: {e}; recompiling",
                    path.display()
                ),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&component, &path) {
            tracing::warn!("cannot write component cache {}: {e}", path.display());
        }
        Ok(component)
    }

    fn store(&self, component: &Component, path: &PathBuf) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let data = component.serialize()?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// Size and modification time (ns) of a file, the key of its recorded sha256.
fn stamp_of(meta: &std::fs::Metadata) -> Option<String> {
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!("{}:{}", meta.len(), mtime.as_nanos()))
}
