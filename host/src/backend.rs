//! Where a role's generations come from: the native engine, or one or more OpenAI-compatible
//! endpoints (`spar-host serve`, `vllm serve`, llama.cpp's server, a hosted API).
//!
//! The remote client sends `/chat/completions` requests with the role's sampling parameters,
//! at most `concurrency` at a time, to the endpoint with the fewest requests in flight;
//! failures that may pass (connection refused or reset, timeouts, 408, 429, 5xx) are retried
//! on the next endpoint with exponential backoff. When the retries are spent the client
//! declares an [`Outage`]: the pipeline stops the stage there instead of recording every
//! remaining item as failed, so a rerun after the server is back loses nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::ModelError;
use crate::model::generate::{Completion, Engine, FinishReason, SamplingParams};
use crate::model::tokenizer::ChatMessage;

/// A role's generator: the native engine or a remote endpoint pool. Cheap to clone.
#[derive(Clone)]
pub enum Generator {
    Local(Engine),
    Remote(Arc<Remote>),
}

impl From<Engine> for Generator {
    fn from(e: Engine) -> Self {
        Generator::Local(e)
    }
}

impl Generator {
    /// The assistant's replies (`params.n` of them) to a conversation.
    pub async fn chat(
        &self,
        messages: &[ChatMessage],
        params: SamplingParams,
    ) -> Result<Vec<Completion>, ModelError> {
        match self {
            Generator::Local(e) => e.chat(messages, params).await,
            Generator::Remote(r) => r.chat(messages, params).await,
        }
    }

    /// A short description for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Generator::Local(_) => "the native engine".into(),
            Generator::Remote(r) => format!("remote {} ({})", r.role, r.cfg.endpoints.join(", ")),
        }
    }
}

/// Set once a remote backend has given up; shared by every backend of a run.
#[derive(Clone, Default)]
pub struct Outage(Arc<Mutex<Option<String>>>);

impl Outage {
    pub fn declare(&self, why: &str) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.get_or_insert_with(|| why.to_string());
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One role's endpoints, as written in a run config (`[remote.actor]`, `[remote.refiner]`,
/// `[remote.judge]`).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Base URLs up to the API version, e.g. `http://10.0.0.7:8000/v1`.
    pub endpoints: Vec<String>,
    /// The model name the servers serve (vLLM's `--served-model-name`); default: the first
    /// model the first endpoint lists under `/models`.
    #[serde(default)]
    pub model: Option<String>,
    /// Environment variable holding the API key, sent as a bearer token when set.
    #[serde(default = "default_key_env")]
    pub api_key_env: String,
    /// Requests in flight at once, over all endpoints.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Seconds one request may take.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Retries of a request that failed in a way that may pass.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry, doubled for each further one (at most 30 s).
    #[serde(default = "default_backoff")]
    pub backoff_s: f64,
}

fn default_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn default_concurrency() -> usize {
    64
}
fn default_timeout() -> f64 {
    600.0
}
fn default_retries() -> u32 {
    4
}
fn default_backoff() -> f64 {
    1.0
}

impl RemoteConfig {
    /// A config for the given endpoints with every default.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            model: None,
            api_key_env: default_key_env(),
            concurrency: default_concurrency(),
            timeout_s: default_timeout(),
            retries: default_retries(),
            backoff_s: default_backoff(),
        }
    }
}

/// A pool of OpenAI-compatible endpoints serving one role.
pub struct Remote {
    pub role: String,
    pub cfg: RemoteConfig,
    model: tokio::sync::OnceCell<String>,
    client: reqwest::Client,
    key: Option<String>,
    inflight: Vec<AtomicUsize>,
    turn: AtomicUsize,
    slots: tokio::sync::Semaphore,
    outage: Outage,
}

/// Why one attempt failed, and whether another may succeed.
struct Failure {
    message: String,
    transient: bool,
}

impl Remote {
    pub fn new(role: &str, cfg: RemoteConfig, outage: Outage) -> Result<Self, ModelError> {
        let bad = |m: String| ModelError::Input(format!("remote {role}: {m}"));
        if cfg.endpoints.is_empty() {
            return Err(bad("no endpoints given".into()));
        }
        for e in &cfg.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(bad(format!("endpoint `{e}` is not an http(s) URL")));
            }
        }
        if cfg.concurrency == 0
            || cfg.timeout_s.is_nan()
            || cfg.timeout_s <= 0.0
            || cfg.backoff_s < 0.0
        {
            return Err(bad(
                "concurrency and timeout_s must be positive, backoff_s not negative".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(cfg.timeout_s))
            .connect_timeout(Duration::from_secs_f64(cfg.timeout_s.min(10.0)))
            .build()
            .map_err(|e| bad(format!("cannot build the HTTP client: {e}")))?;
        let key = std::env::var(&cfg.api_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        let model = tokio::sync::OnceCell::new_with(cfg.model.clone());
        Ok(Self {
            role: role.to_string(),
            inflight: cfg.endpoints.iter().map(|_| AtomicUsize::new(0)).collect(),
            slots: tokio::sync::Semaphore::new(cfg.concurrency),
            turn: AtomicUsize::new(0),
            cfg,
            model,
            client,
            key,
            outage,
        })
    }

    fn url(&self, endpoint: usize, path: &str) -> String {
        format!(
            "{}/{path}",
            self.cfg.endpoints[endpoint].trim_end_matches('/')
        )
    }

    /// The endpoint with the fewest requests in flight, ties taken in turn.
    fn pick(&self) -> usize {
        let n = self.cfg.endpoints.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| self.inflight[i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// One HTTP exchange with one endpoint.
    async fn exchange(
        &self,
        endpoint: usize,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let url = self.url(endpoint, path);
        let mut req = match body {
            Some(b) => self.client.post(&url).json(b),
            None => self.client.get(&url),
        };
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        self.inflight[endpoint].fetch_add(1, Ordering::Relaxed);
        let res = req.send().await;
        let out = match res {
            Err(e) => Err(Failure {
                message: format!("{url}: {}", error_chain(&e)),
                transient: true,
            }),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                if status.is_success() {
                    serde_json::from_str(&text).map_err(|e| Failure {
                        message: format!("{url}: the response is not JSON ({e})"),
                        transient: false,
                    })
                } else {
                    let detail = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| {
                            v.pointer("/error/message")
                                .or_else(|| v.get("detail"))
                                .map(|m| m.as_str().map_or_else(|| m.to_string(), String::from))
                        })
                        .unwrap_or_else(|| text.chars().take(300).collect());
                    let code = status.as_u16();
                    Err(Failure {
                        message: format!("{url}: HTTP {code}: {detail}"),
                        transient: code == 408 || code == 429 || status.is_server_error(),
                    })
                }
            }
        };
        self.inflight[endpoint].fetch_sub(1, Ordering::Relaxed);
        out
    }

    /// An exchange with retries and backoff over the endpoints; declares the outage when
    /// transient failures outlast the retries.
    async fn call(&self, path: &str, body: Option<&Value>) -> Result<Value, ModelError> {
        if let Some(why) = self.outage.get() {
            return Err(ModelError::Input(why));
        }
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| ModelError::Input("the remote client is closed".into()))?;
        let mut wait = self.cfg.backoff_s;
        let mut attempt = 0;
        loop {
            match self.exchange(self.pick(), path, body).await {
                Ok(v) => return Ok(v),
                Err(f) if !f.transient => {
                    return Err(ModelError::Input(format!(
                        "remote {}: {}",
                        self.role, f.message
                    )));
                }
                Err(f) if attempt >= self.cfg.retries => {
                    let why = format!(
                        "remote {} unavailable after {} attempts: {}",
                        self.role,
                        attempt + 1,
                        f.message
                    );
                    self.outage.declare(&why);
                    return Err(ModelError::Input(why));
                }
                Err(f) => {
                    tracing::warn!(role = %self.role, attempt, "retrying: {}", f.message);
                    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                    wait = (wait * 2.0).min(30.0);
                    attempt += 1;
                }
            }
        }
    }

    /// The served model's name: configured, or the first one `/models` lists.
    pub async fn model(&self) -> Result<String, ModelError> {
        self.model
            .get_or_try_init(|| async {
                let v = self.call("models", None).await?;
                v.pointer("/data/0/id")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| {
                        ModelError::Input(format!(
                            "remote {}: {} lists no model; set `model` in the config",
                            self.role,
                            self.url(0, "models")
                        ))
                    })
            })
            .await
            .cloned()
    }

    /// `n` replies to a conversation. A server that returns fewer choices than asked for
    /// (llama.cpp's serves one) is asked again for the rest, with the next seeds.
    pub async fn chat(
        &self,
        messages: &[ChatMessage],
        params: SamplingParams,
    ) -> Result<Vec<Completion>, ModelError> {
        let model = self.model().await?;
        let want = params.n.max(1);
        let mut out: Vec<Completion> = Vec::with_capacity(want);
        while out.len() < want {
            let k = out.len() as u64;
            let body = request_body(&model, messages, &params, want - out.len(), k);
            let v = self.call("chat/completions", Some(&body)).await?;
            let got = parse_choices(&v)
                .map_err(|e| ModelError::Input(format!("remote {}: {e}", self.role)))?;
            if got.is_empty() {
                return Err(ModelError::Input(format!(
                    "remote {}: the response has no choices",
                    self.role
                )));
            }
            out.extend(got.into_iter().take(want - out.len()));
        }
        Ok(out)
    }
}

/// The JSON body of a chat request for `n` samples; `offset` shifts the seed for a follow-up
/// request of the same call.
fn request_body(
    model: &str,
    messages: &[ChatMessage],
    p: &SamplingParams,
    n: usize,
    offset: u64,
) -> Value {
    let mut body = json!({
        "model": model,
        "messages": messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
        "n": n,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "max_tokens": p.max_new_tokens,
    });
    if !p.stop.is_empty() {
        body["stop"] = json!(p.stop);
    }
    if let Some(s) = p.seed {
        // OpenAI's seed is a signed 64-bit integer: the same 64 bits, so `spar-host serve`
        // (which reads them back as unsigned) samples exactly what the native engine would.
        body["seed"] = json!(s.wrapping_add(offset) as i64);
    }
    if p.top_k > 0 {
        body["top_k"] = json!(p.top_k);
    }
    body
}

/// The choices of a chat response, in index order.
fn parse_choices(v: &Value) -> Result<Vec<Completion>, String> {
    let choices = v
        .get("choices")
        .and_then(Value::as_array)
        .ok_or("the response has no `choices` array")?;
    let mut out: Vec<(u64, Completion)> = Vec::new();
    for (k, c) in choices.iter().enumerate() {
        let text = c
            .pointer("/message/content")
            .and_then(Value::as_str)
            .or_else(|| c.get("text").and_then(Value::as_str))
            .ok_or_else(|| format!("choice {k} has no message content"))?;
        let finish_reason = match c.get("finish_reason").and_then(Value::as_str) {
            Some("length") => FinishReason::Length,
            _ => FinishReason::Stop,
        };
        let index = c.get("index").and_then(Value::as_u64).unwrap_or(k as u64);
        out.push((
            index,
            Completion {
                text: text.to_string(),
                token_ids: Vec::new(),
                finish_reason,
            },
        ));
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, c)| c).collect())
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_come_back_in_index_order() {
        let v = json!({"choices": [
            {"index": 1, "message": {"role": "assistant", "content": "b"}, "finish_reason": "length"},
            {"index": 0, "message": {"role": "assistant", "content": "a"}, "finish_reason": "stop"},
        ]});
        let c = parse_choices(&v).unwrap();
        assert_eq!(c[0].text, "a");
        assert_eq!(c[0].finish_reason, FinishReason::Stop);
        assert_eq!(c[1].text, "b");
        assert_eq!(c[1].finish_reason, FinishReason::Length);
        assert!(parse_choices(&json!({"error": "x"})).is_err());
    }

    #[test]
    fn request_carries_the_sampling_parameters() {
        let p = SamplingParams {
            n: 3,
            temperature: 0.7,
            top_p: 0.9,
            top_k: 5,
            max_new_tokens: 17,
            stop: vec!["###".into()],
            seed: Some(u64::MAX - 1),
            ..SamplingParams::default()
        };
        let b = request_body("m", &[ChatMessage::new("user", "hi")], &p, 2, 4);
        assert_eq!(b["n"], 2);
        assert_eq!(b["max_tokens"], 17);
        assert_eq!(b["top_k"], 5);
        assert_eq!(b["stop"], json!(["###"]));
        assert_eq!(b["seed"], 2); // u64::MAX - 1 + 4 wraps to 2
        assert_eq!(b["messages"][0]["content"], "hi");
        let greedy = request_body("m", &[], &SamplingParams::default(), 1, 0);
        assert!(greedy.get("top_k").is_none() && greedy.get("seed").is_none());
    }

    #[test]
    fn bad_configs_are_refused() {
        let o = Outage::default();
        assert!(Remote::new("actor", RemoteConfig::new(vec![]), o.clone()).is_err());
        let e = Remote::new("actor", RemoteConfig::new(vec!["localhost:1".into()]), o)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("remote actor") && e.contains("localhost:1"),
            "{e}"
        );
    }
}
