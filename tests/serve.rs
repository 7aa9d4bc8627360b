//! `spar-host serve` on loopback, started by the tests: the official `openai` Python client
//! against it on the embedded model; spar's remote backend against it (the same samples as
//! the native engine, bit for bit) and against llama-cpp-python's OpenAI-compatible server on
//! the embedded GGUF; graceful shutdown with a request in flight; retries, then a clear error.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use spar_host::backend::{Generator, Outage, Remote, RemoteConfig};
use spar_host::model::generate::{Engine, SamplingParams};
use spar_host::model::tiny::write_tiny_model_with;
use spar_host::model::tokenizer::ChatMessage;
use spar_host::model::{LoadedModel, default_model_dir};
use spar_host::plugin::repo_root;

fn python() -> PathBuf {
    repo_root().join(".venv/bin/python")
}

fn embedded() -> PathBuf {
    let d = default_model_dir();
    assert!(
        d.join("config.json").exists(),
        "{} is missing: run `bash scripts/setup.sh`",
        d.display()
    );
    d
}

const PROMPT: &str = "Name three colors of the rainbow.";

#[test]
fn openai_python_client_against_spar_serve() {
    let server = Server::start(&embedded(), &[]);
    let out = Command::new(python())
        .arg(repo_root().join("scripts/openai_client_check.py"))
        .args([&server.url, PROMPT])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    // The server's greedy reply is the CLI's.
    let generated = Command::new(env!("CARGO_BIN_EXE_spar-host"))
        .args([
            "generate",
            "--device",
            "cpu",
            "--max-new-tokens",
            "24",
            "--prompt",
            PROMPT,
        ])
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    // With --prompt, the CLI prints each completion's text on its own line(s).
    let printed = String::from_utf8_lossy(&generated.stdout);
    let cli_text = printed.strip_suffix('\n').unwrap_or(&printed);
    assert_eq!(report["greedy"].as_str().unwrap(), cli_text);
}

fn tiny(tag: &str) -> PathBuf {
    let dir = common::tempdir(tag).join("model");
    write_tiny_model_with(&dir, 16, 5, &["Final Judgement: Yes", "[[start]]"], 512).unwrap();
    dir
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn remote_backend_samples_what_the_native_engine_samples() {
    let model = tiny("remote");
    let server = Server::start(&model, &["--served-model-name", "tiny"]);
    rt().block_on(async {
        let remote = Generator::Remote(std::sync::Arc::new(
            Remote::new(
                "actor",
                RemoteConfig::new(vec![server.url.clone()]),
                Outage::default(),
            )
            .unwrap(),
        ));
        let local = Generator::from(
            Engine::start(
                LoadedModel::load(&model, tch::Device::Cpu, tch::Kind::Float).unwrap(),
                16,
            )
            .unwrap(),
        );
        let msgs = [ChatMessage::new("user", "Write w3 w4.")];
        for params in [
            SamplingParams {
                max_new_tokens: 12,
                ..SamplingParams::default()
            },
            SamplingParams {
                n: 4,
                temperature: 1.0,
                top_p: 0.9,
                top_k: 20,
                max_new_tokens: 10,
                // Above 2^63: the seed's bits survive OpenAI's signed integer.
                seed: Some(u64::MAX - 12345),
                ..SamplingParams::default()
            },
            SamplingParams {
                n: 2,
                temperature: 1.0,
                max_new_tokens: 16,
                stop: vec!["Yes".into()],
                seed: Some(3),
                ..SamplingParams::default()
            },
        ] {
            let a = remote.chat(&msgs, params.clone()).await.unwrap();
            let b = local.chat(&msgs, params.clone()).await.unwrap();
            let text = |v: &[spar_host::model::generate::Completion]| {
                v.iter()
                    .map(|c| (c.text.clone(), c.finish_reason))
                    .collect::<Vec<_>>()
            };
            assert_eq!(text(&a), text(&b), "{params:?}");
        }
        // The model name was asked of /v1/models.
        if let Generator::Remote(r) = &remote {
            assert_eq!(r.model().await.unwrap(), "tiny");
        }
    });
}

#[test]
fn remote_backend_retries_then_fails_clearly_and_balances_endpoints() {
    let model = tiny("retry");
    let server = Server::start(&model, &[]);
    // A dead endpoint beside a live one: requests get through (retried on the live one).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}/v1")
    };
    rt().block_on(async {
        let mut cfg = RemoteConfig::new(vec![dead.clone(), server.url.clone()]);
        cfg.backoff_s = 0.05;
        cfg.retries = 3;
        let outage = Outage::default();
        let r = Remote::new("refiner", cfg.clone(), outage.clone()).unwrap();
        let msgs = [ChatMessage::new("user", "hi")];
        let p = SamplingParams {
            max_new_tokens: 4,
            ..SamplingParams::default()
        };
        for _ in 0..4 {
            r.chat(&msgs, p.clone()).await.unwrap();
        }
        assert!(outage.get().is_none());
        // A 4xx is not retried and is no outage.
        let long = SamplingParams {
            max_new_tokens: 100_000,
            ..SamplingParams::default()
        };
        let e = r.chat(&msgs, long).await.unwrap_err().to_string();
        assert!(e.contains("HTTP 400") && e.contains("context"), "{e}");
        assert!(outage.get().is_none());
        // Two live endpoints share the requests.
        let second = Server::start(&model, &[]);
        let both = Remote::new(
            "actor",
            RemoteConfig::new(vec![server.url.clone(), second.url.clone()]),
            outage.clone(),
        )
        .unwrap();
        for _ in 0..4 {
            both.chat(&msgs, p.clone()).await.unwrap();
        }
        for s in [&server, &second] {
            let stats: serde_json::Value = reqwest::get(s.url.replace("/v1", "/stats"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(
                stats["decode_steps"].as_u64().unwrap() > 0,
                "{} got nothing",
                s.url
            );
        }
        // Only dead endpoints: retries with backoff, then one clear error and the outage.
        let only_dead = Remote::new(
            "refiner",
            RemoteConfig {
                endpoints: vec![dead.clone()],
                ..cfg
            },
            outage.clone(),
        )
        .unwrap();
        let t = Instant::now();
        let e = only_dead.chat(&msgs, p).await.unwrap_err().to_string();
        assert!(
            t.elapsed() >= Duration::from_millis(50 + 100 + 200),
            "backoff doubles"
        );
        assert!(
            e.contains("remote refiner unavailable after 4 attempts") && e.contains(&dead),
            "{e}"
        );
        assert_eq!(outage.get().as_deref(), Some(e.as_str()));
    });
}

#[test]
fn sigterm_finishes_the_request_in_flight() {
    use std::io::BufRead;
    let model = tiny("shutdown");
    let server = Server::start(&model, &[]);
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": 480, "temperature": 0, "ignore_eos": true, "stream": true,
        "stream_options": {"include_usage": true},
    });
    let mut curl = Command::new("curl")
        .args(["-sSN", "-H", "content-type: application/json", "-d"])
        .arg(body.to_string())
        .arg(format!("{}/chat/completions", server.url))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut events = std::io::BufReader::new(curl.stdout.take().unwrap()).lines();
    // The first event is there: the request is in flight when the server is told to stop.
    let first = events.next().unwrap().unwrap();
    assert!(first.starts_with("data: "), "{first}");
    server.terminate();
    let rest: Vec<String> = events
        .map(|l| l.unwrap())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        rest.last().map(String::as_str),
        Some("data: [DONE]"),
        "{rest:?}"
    );
    let usage: serde_json::Value =
        serde_json::from_str(rest[rest.len() - 2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 480, "{usage}");
    curl.wait().unwrap();
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    // Stopped: nothing listens any more.
    assert!(
        std::net::TcpStream::connect(
            server
                .url
                .trim_start_matches("http://")
                .trim_end_matches("/v1")
        )
        .is_err()
    );
}

/// llama-cpp-python's OpenAI-compatible server on the embedded model's GGUF, and spar's remote
/// backend against it.
#[test]
fn remote_backend_against_llama_cpp_python_server() {
    let gguf = spar_host::bench_serve::embedded_gguf(&repo_root());
    assert!(
        gguf.exists(),
        "{} is missing: run `bash scripts/setup.sh`",
        gguf.display()
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(python())
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(&gguf)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--n_ctx",
            "2048",
        ])
        .args(["--model_alias", "smollm2", "--verbose", "false"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("llama-cpp-python starts");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(child);
    let url = format!("http://127.0.0.1:{port}/v1");
    rt().block_on(async {
        let mut cfg = RemoteConfig::new(vec![url.clone()]);
        // The server needs a few seconds to load: the retries cover it.
        cfg.retries = 12;
        cfg.backoff_s = 0.25;
        let r = Remote::new("judge", cfg, Outage::default()).unwrap();
        assert_eq!(r.model().await.unwrap(), "smollm2");
        let msgs = [ChatMessage::new(
            "user",
            "What is the capital of France? One word.",
        )];
        let greedy = r
            .chat(
                &msgs,
                SamplingParams {
                    max_new_tokens: 16,
                    ..SamplingParams::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(greedy.len(), 1);
        assert!(greedy[0].text.contains("Paris"), "{:?}", greedy[0]);
        // n = 3 from a server that returns one choice per request: asked until there are 3.
        let three = r
            .chat(
                &msgs,
                SamplingParams {
                    n: 3,
                    temperature: 0.8,
                    max_new_tokens: 8,
                    seed: Some(5),
                    ..SamplingParams::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(three.len(), 3);
        assert!(three.iter().all(|c| !c.text.is_empty()), "{three:?}");
    });
}

#[test]
fn api_key_is_required_when_set() {
    let model = tiny("apikey");
    let server = Server::start(&model, &["--api-key", "sekret"]);
    let models = format!("{}/models", server.url);
    let status = |extra: &[&str]| {
        let o = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(extra)
            .arg(&models)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(status(&[]), "401");
    assert_eq!(status(&["-H", "Authorization: Bearer wrong"]), "401");
    assert_eq!(status(&["-H", "Authorization: Bearer sekret"]), "200");
    // The remote backend sends the key from the variable its config names.
    let var = "SPAR_TEST_SERVE_KEY";
    // SAFETY: this test's own variable, set before any thread reads it.
    unsafe { std::env::set_var(var, "sekret") };
    rt().block_on(async {
        let mut cfg = RemoteConfig::new(vec![server.url.clone()]);
        cfg.api_key_env = var.into();
        let r = Remote::new("actor", cfg.clone(), Outage::default()).unwrap();
        let msgs = [ChatMessage::new("user", "hi")];
        let p = SamplingParams {
            max_new_tokens: 3,
            ..SamplingParams::default()
        };
        assert_eq!(r.chat(&msgs, p.clone()).await.unwrap().len(), 1);
        cfg.api_key_env = "SPAR_TEST_NO_SUCH_VARIABLE".into();
        let e = Remote::new("actor", cfg, Outage::default())
            .unwrap()
            .chat(&msgs, p)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("401"), "{e}");
    });
}

/// A client that goes away (timeout, closed connection) stops its decoding, streamed or not.
#[test]
fn a_client_that_leaves_frees_its_rows() {
    let server = Server::start(&embedded(), &[]);
    let stats = format!("{}/stats", server.url.trim_end_matches("/v1"));
    let steps = || -> u64 {
        let o = Command::new("curl").args(["-s", &stats]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["decode_steps"].as_u64().unwrap()
    };
    let mut before = steps();
    for stream in [false, true] {
        let body = serde_json::json!({
            "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": 4000, "temperature": 0, "ignore_eos": true, "stream": stream,
        });
        // Gives up after a second, far before 4000 tokens.
        let _ = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "1",
                "-H",
                "content-type: application/json",
                "-d",
            ])
            .arg(body.to_string())
            .arg(format!("{}/chat/completions", server.url))
            .output()
            .unwrap();
        // Decoding stops soon after (a step or two in flight), far before 4000 tokens.
        let t = Instant::now();
        let mut last = steps();
        loop {
            std::thread::sleep(Duration::from_millis(1500));
            let now = steps();
            if now == last {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "stream={stream}: still decoding"
            );
            last = now;
        }
        assert!(
            last - before < 1000,
            "stream={stream}: {} steps",
            last - before
        );
        before = last;
    }
}
