//! Shared helpers of the integration tests: where the built plugins are, and a host.
#![allow(dead_code)]

use std::path::PathBuf;

use spar_host::plugin::{PluginHost, SandboxConfig, repo_root};

/// A plugin built by `scripts/build-plugins.sh`; a missing one fails the test (never skips).
pub fn plugin(rel: &str) -> PathBuf {
    let p = repo_root().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/build-plugins.sh` (the test command does)",
        p.display()
    );
    p
}

pub fn shipped(name: &str) -> PathBuf {
    plugin(&format!("plugins/target/wasm32-wasip2/release/{name}.wasm"))
}

pub fn test_plugin(name: &str) -> PathBuf {
    plugin(&format!(
        "tests/plugins/target/wasm32-wasip2/release/{name}.wasm"
    ))
}

pub fn python_checker() -> PathBuf {
    plugin("examples/python-checker/build/python_checker.wasm")
}

/// A fresh, empty folder under the system temp dir.
pub fn tempdir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "spar-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A host with small limits so hostile plugins fail fast, and a private cache.
pub fn host() -> PluginHost {
    PluginHost::new(SandboxConfig {
        fuel_per_call: 300_000_000,
        memory_limit_bytes: 64 << 20,
        cache_dir: Some(tempdir("cache")),
        ..SandboxConfig::default()
    })
    .unwrap()
}

/// A `spar-host serve` child process on a free loopback port; killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT/v1`
    pub url: String,
}

impl Server {
    pub fn start(model: &std::path::Path, extra: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_spar-host"))
            .args(["serve", "--port", "0", "--device", "cpu", "--model"])
            .arg(model)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spar-host serve starts");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in `{line}`"))
            .to_string();
        // Keep reading stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        Self { child, url }
    }

    /// SIGTERM, as a service manager stops it.
    pub fn terminate(&self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
