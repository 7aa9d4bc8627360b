//! `spar-host serve`: an OpenAI-compatible HTTP server over the native generation engine.
//!
//! `/v1/chat/completions` and `/v1/completions` (with `n`, `temperature`, `top_p`, `top_k`,
//! `max_tokens`, `stop`, `seed`, and server-sent-event streaming), `/v1/models`, `/health`
//! and `/stats` (the engine's batching counters). Every request goes to one engine, which
//! batches whatever is waiting, so many clients share decode steps. Bad requests get a 4xx
//! with OpenAI's error object; what the engine cannot do (log-probs, tools, penalties) is
//! refused by name rather than ignored.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::model::generate::{Completion, Engine, SamplingParams, StreamToken};
use crate::model::tokenizer::ChatMessage;

/// What `serve` needs besides the engine.
pub struct ServeOptions {
    /// The name clients put in `model` (vLLM's `--served-model-name`).
    pub model_name: String,
    /// When set, `/v1/*` requires `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
}

struct App {
    engine: Engine,
    name: String,
    api_key: Option<String>,
    created: u64,
    ids: AtomicU64,
}

/// An OpenAI-style error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    param: Option<&'static str>,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: None,
        }
    }

    fn param(mut self, p: &'static str) -> Self {
        self.param = Some(p);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        let body = json!({"error": {
            "message": self.message,
            "type": kind,
            "param": self.param,
            "code": self.status.as_u16(),
        }});
        (self.status, axum::Json(body)).into_response()
    }
}

/// The router, for `serve` and for tests that bind their own listener.
pub fn router(engine: Engine, opts: ServeOptions) -> Router {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let app = Arc::new(App {
        engine,
        name: opts.model_name,
        api_key: opts.api_key,
        created,
        ids: AtomicU64::new(0),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .route("/stats", get(stats))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                message: "no such route".into(),
                param: None,
            }
        })
        .with_state(app)
}

/// Serve on `listener` until `shutdown` resolves; requests in flight are finished first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Engine,
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(engine, opts))
        .with_graceful_shutdown(shutdown)
        .await
}

fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &app.api_key else {
        return Ok(());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or wrong API key".into(),
            param: None,
        })
    }
}

async fn models(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    Ok(axum::Json(json!({
        "object": "list",
        "data": [{
            "id": app.name,
            "object": "model",
            "created": app.created,
            "owned_by": "spar",
            "max_model_len": app.engine.context(),
        }],
    }))
    .into_response())
}

async fn stats(State(app): State<Arc<App>>) -> Response {
    let s = app.engine.stats();
    let steps = s.steps.load(Ordering::Relaxed);
    let rows = s.row_steps.load(Ordering::Relaxed);
    axum::Json(json!({
        "decode_steps": steps,
        "row_steps": rows,
        "mean_batch": if steps == 0 { 0.0 } else { rows as f64 / steps as f64 },
        "joined_running": s.joined_running.load(Ordering::Relaxed),
        "prompt_cache_hits": s.prompt_cache_hits.load(Ordering::Relaxed),
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------
// Requests

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The fields both endpoints share. Unknown fields are ignored, as OpenAI's clients send
/// many; the ones that would change the answer and are not implemented are refused.
#[derive(Deserialize)]
struct Common {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    n: Option<usize>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<i64>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    logprobs: Option<Value>,
    #[serde(default)]
    ignore_eos: bool,
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<InMessage>,
    #[serde(flatten)]
    common: Common,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<i64>),
    IdLists(Vec<Vec<i64>>),
}

#[derive(Deserialize)]
struct CompletionRequest {
    prompt: PromptInput,
    #[serde(flatten)]
    common: Common,
    #[serde(default)]
    echo: bool,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    best_of: Option<usize>,
}

/// Parse a JSON body into `T`, a 400 naming the problem otherwise.
fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("the request body is not valid JSON: {e}")))?;
    serde_json::from_value(v).map_err(|e| ApiError::bad(format!("invalid request: {e}")))
}

impl App {
    /// Check the model name and the sampling fields; the prompt's length sets the default
    /// and the cap of `max_tokens`.
    fn params(&self, c: &Common, prompt_tokens: usize) -> Result<SamplingParams, ApiError> {
        if let Some(m) = &c.model
            && m != &self.name
        {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!(
                    "The model `{m}` does not exist (this server serves `{}`).",
                    self.name
                ),
                param: Some("model"),
            });
        }
        let refuse = |what: &str, p: &'static str| {
            Err(ApiError::bad(format!("{what} is not supported by spar-host serve")).param(p))
        };
        if c.presence_penalty.is_some_and(|x| x != 0.0) {
            return refuse("presence_penalty", "presence_penalty");
        }
        if c.frequency_penalty.is_some_and(|x| x != 0.0) {
            return refuse("frequency_penalty", "frequency_penalty");
        }
        if c.logprobs
            .as_ref()
            .is_some_and(|v| !(v.is_null() || v == &json!(false)))
        {
            return refuse("logprobs", "logprobs");
        }
        let n = c.n.unwrap_or(1);
        if !(1..=128).contains(&n) {
            return Err(ApiError::bad("n must be between 1 and 128").param("n"));
        }
        let temperature = c.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::bad("temperature must be between 0 and 2").param("temperature"));
        }
        let top_p = c.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::bad("top_p must be in (0, 1]").param("top_p"));
        }
        let top_k = match c.top_k.unwrap_or(0) {
            k if k <= 0 => 0,
            k => k as usize,
        };
        let ctx = self.engine.context();
        if prompt_tokens == 0 {
            return Err(ApiError::bad("the prompt is empty"));
        }
        let room = ctx.saturating_sub(prompt_tokens);
        let max_tokens = c.max_completion_tokens.or(c.max_tokens).unwrap_or(room);
        if max_tokens == 0 || prompt_tokens + max_tokens > ctx {
            return Err(ApiError::bad(format!(
                "This model's maximum context length is {ctx} tokens. However, you requested {} tokens ({prompt_tokens} in the prompt, {max_tokens} in the completion).",
                prompt_tokens + max_tokens
            ))
            .param("max_tokens"));
        }
        let stop = match &c.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        Ok(SamplingParams {
            n,
            temperature,
            top_p,
            top_k,
            max_new_tokens: max_tokens,
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            seed: c.seed.map(|s| s as u64),
            ignore_eos: c.ignore_eos,
        })
    }

    fn id(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{:x}{:06x}",
            self.created,
            self.ids.fetch_add(1, Ordering::Relaxed)
        )
    }
}

fn chat_messages(msgs: Vec<InMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::bad("messages must not be empty").param("messages"));
    }
    msgs.into_iter()
        .enumerate()
        .map(|(i, m)| {
            if !matches!(
                m.role.as_str(),
                "system" | "developer" | "user" | "assistant"
            ) {
                return Err(ApiError::bad(format!(
                    "messages[{i}].role `{}` is not one of system, developer, user, assistant",
                    m.role
                ))
                .param("messages"));
            }
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut s = String::new();
                    for p in parts {
                        if p.kind != "text" {
                            return Err(ApiError::bad(format!(
                                "messages[{i}]: content parts of type `{}` are not supported",
                                p.kind
                            ))
                            .param("messages"));
                        }
                        s.push_str(p.text.as_deref().unwrap_or(""));
                    }
                    s
                }
            };
            let role = if m.role == "developer" {
                "system".into()
            } else {
                m.role
            };
            Ok(ChatMessage { role, content })
        })
        .collect()
}

async fn chat_completions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    let req: ChatRequest = parse(&body)?;
    if req
        .tools
        .as_ref()
        .is_some_and(|t| !t.is_null() && t != &json!([]))
    {
        return Err(ApiError::bad("tools are not supported by spar-host serve").param("tools"));
    }
    if let Some(rf) = &req.response_format
        && rf
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t != "text")
    {
        return Err(
            ApiError::bad("response_format other than text is not supported")
                .param("response_format"),
        );
    }
    let messages = chat_messages(req.messages)?;
    let ids = app
        .engine
        .tokenizer()
        .encode_chat(&messages, true)
        .map_err(|e| ApiError::bad(format!("cannot render the chat template: {e}")))?;
    let params = app.params(&req.common, ids.len())?;
    let kind = Kind::Chat;
    if req.common.stream {
        let usage = req.common.stream_options.unwrap_or_default().include_usage;
        return Ok(stream_response(app.clone(), kind, vec![ids], params, usage));
    }
    let prompt_tokens = ids.len();
    let done = app
        .engine
        .submit(ids, params)
        .await
        .map_err(|e| ApiError::bad(e.to_string()))?;
    Ok(axum::Json(full_response(&app, kind, &[(prompt_tokens, done)])).into_response())
}

async fn completions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&app, &headers)?;
    let req: CompletionRequest = parse(&body)?;
    if req.echo {
        return Err(ApiError::bad("echo is not supported by spar-host serve").param("echo"));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad("suffix is not supported by spar-host serve").param("suffix"));
    }
    if req.best_of.is_some_and(|b| b != req.common.n.unwrap_or(1)) {
        return Err(ApiError::bad("best_of is not supported by spar-host serve").param("best_of"));
    }
    let tok = app.engine.tokenizer();
    let vocab = tok.vocab_size() as i64;
    let encode = |t: &str| {
        tok.encode(t, true)
            .map_err(|e| ApiError::bad(format!("cannot tokenize the prompt: {e}")))
    };
    let prompts: Vec<Vec<i64>> = match req.prompt {
        PromptInput::Text(t) => vec![encode(&t)?],
        PromptInput::Texts(v) => v.iter().map(|t| encode(t)).collect::<Result<_, _>>()?,
        PromptInput::Ids(v) => vec![v],
        PromptInput::IdLists(v) => v,
    };
    if prompts.is_empty() {
        return Err(ApiError::bad("prompt must not be empty").param("prompt"));
    }
    if prompts.iter().flatten().any(|&t| t < 0 || t >= vocab) {
        return Err(ApiError::bad(format!("token ids must be in 0..{vocab}")).param("prompt"));
    }
    let mut params = Vec::with_capacity(prompts.len());
    for p in &prompts {
        params.push(app.params(&req.common, p.len())?);
    }
    let kind = Kind::Text;
    if req.common.stream {
        let usage = req.common.stream_options.unwrap_or_default().include_usage;
        // The prompts' parameters differ only in the default max_tokens (the context left
        // after each prompt); streamed together, the smallest applies to all.
        let p = params
            .into_iter()
            .min_by_key(|p| p.max_new_tokens)
            .expect("one prompt");
        return Ok(stream_response(app.clone(), kind, prompts, p, usage));
    }
    let jobs = prompts.into_iter().zip(params).map(|(ids, p)| {
        let engine = app.engine.clone();
        async move {
            let l = ids.len();
            engine.submit(ids, p).await.map(|c| (l, c))
        }
    });
    let done = futures_util::future::try_join_all(jobs)
        .await
        .map_err(|e| ApiError::bad(e.to_string()))?;
    Ok(axum::Json(full_response(&app, kind, &done)).into_response())
}

// ---------------------------------------------------------------------------------------
// Responses

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Text,
}

fn finish(c: &Completion) -> Value {
    json!(c.finish_reason)
}

/// A complete (non-streamed) response for one or more prompts' completions; choices are
/// numbered prompt-major, as OpenAI does for several prompts.
fn full_response(app: &App, kind: Kind, done: &[(usize, Vec<Completion>)]) -> Value {
    let mut choices = Vec::new();
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    for (l, cs) in done {
        prompt_tokens += l;
        for c in cs {
            completion_tokens += c.token_ids.len();
            let index = choices.len();
            choices.push(match kind {
                Kind::Chat => json!({
                    "index": index,
                    "message": {"role": "assistant", "content": c.text},
                    "logprobs": null,
                    "finish_reason": finish(c),
                }),
                Kind::Text => json!({
                    "index": index,
                    "text": c.text,
                    "logprobs": null,
                    "finish_reason": finish(c),
                }),
            });
        }
    }
    let (prefix, object) = match kind {
        Kind::Chat => ("chatcmpl", "chat.completion"),
        Kind::Text => ("cmpl", "text_completion"),
    };
    json!({
        "id": app.id(prefix),
        "object": object,
        "created": now(),
        "model": app.name,
        "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    })
}

fn usage(p: usize, c: usize) -> Value {
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The text of one streamed choice so far, and how much of it was sent.
struct Piece {
    tokens: Vec<i64>,
    sent: String,
}

impl Piece {
    /// The next delta that is safe to send: decoded text that is not a partial character,
    /// cannot turn out to be the start of a stop string, and precedes any stop string.
    fn delta(&mut self, tok: &crate::model::Tokenizer, stop: &[String]) -> Option<String> {
        let text = tok.decode(&self.tokens, true).ok()?;
        if text.ends_with('\u{FFFD}') {
            return None;
        }
        let mut safe = match stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            Some(cut) => cut,
            None => {
                let hold = stop
                    .iter()
                    .map(|s| s.len().saturating_sub(1))
                    .max()
                    .unwrap_or(0);
                text.len().saturating_sub(hold)
            }
        };
        while !text.is_char_boundary(safe) {
            safe -= 1;
        }
        self.advance(&text[..safe])
    }

    /// The part of `text` beyond what was sent, if `text` extends it.
    fn advance(&mut self, text: &str) -> Option<String> {
        if text.len() > self.sent.len() && text.starts_with(self.sent.as_str()) {
            let d = text[self.sent.len()..].to_string();
            self.sent = text.to_string();
            Some(d)
        } else {
            None
        }
    }
}

/// One streamed chunk.
fn chunk(
    app: &App,
    kind: Kind,
    id: &str,
    index: usize,
    delta: Option<&str>,
    role: bool,
    finish: Value,
) -> Value {
    match kind {
        Kind::Chat => {
            let mut d = serde_json::Map::new();
            if role {
                d.insert("role".into(), json!("assistant"));
            }
            if let Some(t) = delta {
                d.insert("content".into(), json!(t));
            }
            json!({
                "id": id, "object": "chat.completion.chunk", "created": now(), "model": app.name,
                "choices": [{"index": index, "delta": d, "logprobs": null, "finish_reason": finish}],
            })
        }
        Kind::Text => json!({
            "id": id, "object": "text_completion", "created": now(), "model": app.name,
            "choices": [{"index": index, "text": delta.unwrap_or(""), "logprobs": null, "finish_reason": finish}],
        }),
    }
}

/// Stream the completions of `prompts` as server-sent events: a role chunk per chat choice,
/// text deltas as tokens are sampled, a final chunk per choice with its finish reason, the
/// usage when asked for, then `[DONE]`. A client that goes away cancels its rows.
fn stream_response(
    app: Arc<App>,
    kind: Kind,
    prompts: Vec<Vec<i64>>,
    params: SamplingParams,
    include_usage: bool,
) -> Response {
    let (out, rx) = mpsc::channel::<Value>(256);
    let n = params.n.max(1);
    let id = app.id(if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    });
    tokio::spawn(async move {
        let tasks = prompts.into_iter().enumerate().map(|(k, ids)| {
            let (app, out, params, id) = (app.clone(), out.clone(), params.clone(), id.clone());
            async move { stream_one(&app, kind, &id, k * n, ids, params, &out).await }
        });
        let results = futures_util::future::join_all(tasks).await;
        let mut totals = (0, 0);
        for r in &results {
            match r {
                Ok((p, c)) => {
                    totals.0 += p;
                    totals.1 += c;
                }
                Err(Some(e)) => {
                    let _ = out
                        .send(json!({"error": {"message": e, "type": "invalid_request_error", "code": 400}}))
                        .await;
                }
                Err(None) => return,
            }
        }
        if include_usage {
            let object = if kind == Kind::Chat {
                "chat.completion.chunk"
            } else {
                "text_completion"
            };
            let _ = out
                .send(json!({
                    "id": id, "object": object, "created": now(), "model": app.name,
                    "choices": [], "usage": usage(totals.0, totals.1),
                }))
                .await;
        }
        let _ = out.send(Value::Null).await;
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let v = rx.recv().await?;
        let e = if v.is_null() {
            Event::default().data("[DONE]")
        } else {
            Event::default().data(v.to_string())
        };
        Some((Ok::<_, Infallible>(e), rx))
    });
    Sse::new(events).into_response()
}

/// Stream one prompt's `n` choices (numbered from `base`); returns the prompt and
/// completion token counts, `Err(Some)` for an engine error, `Err(None)` when the client left.
async fn stream_one(
    app: &App,
    kind: Kind,
    id: &str,
    base: usize,
    ids: Vec<i64>,
    params: SamplingParams,
    out: &mpsc::Sender<Value>,
) -> Result<(usize, usize), Option<String>> {
    let n = params.n.max(1);
    let stop = params.stop.clone();
    let prompt_tokens = ids.len();
    if kind == Kind::Chat {
        for k in 0..n {
            out.send(chunk(app, kind, id, base + k, Some(""), true, Value::Null))
                .await
                .map_err(|_| None)?;
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<StreamToken>();
    let fut = app.engine.submit_streaming(ids, params, Some(tx));
    tokio::pin!(fut);
    let mut pieces: Vec<Piece> = (0..n)
        .map(|_| Piece {
            tokens: Vec::new(),
            sent: String::new(),
        })
        .collect();
    let tok = app.engine.tokenizer();
    let send_token = |pieces: &mut Vec<Piece>, t: StreamToken| {
        let p = &mut pieces[t.sample];
        p.tokens.push(t.token);
        p.delta(tok, &stop)
            .map(|d| chunk(app, kind, id, base + t.sample, Some(&d), false, Value::Null))
    };
    let done = loop {
        tokio::select! {
            biased;
            Some(t) = rx.recv() => {
                if let Some(c) = send_token(&mut pieces, t) {
                    out.send(c).await.map_err(|_| None)?;
                }
            }
            r = &mut fut => break r,
        }
    };
    let done = done.map_err(|e| Some(e.to_string()))?;
    while let Ok(t) = rx.try_recv() {
        if let Some(c) = send_token(&mut pieces, t) {
            out.send(c).await.map_err(|_| None)?;
        }
    }
    let mut completion_tokens = 0;
    for (k, c) in done.iter().enumerate() {
        completion_tokens += c.token_ids.len();
        let rest = pieces[k].advance(&c.text);
        out.send(chunk(
            app,
            kind,
            id,
            base + k,
            rest.as_deref(),
            false,
            finish(c),
        ))
        .await
        .map_err(|_| None)?;
    }
    Ok((prompt_tokens, completion_tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_openai_shaped() {
        let r = ApiError::bad("n must be positive")
            .param("n")
            .into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn pieces_only_extend() {
        let mut p = Piece {
            tokens: vec![],
            sent: String::new(),
        };
        assert_eq!(p.advance("Hel").as_deref(), Some("Hel"));
        assert_eq!(p.advance("Hel"), None);
        assert_eq!(p.advance("Hello").as_deref(), Some("lo"));
        assert_eq!(p.advance("Help"), None);
    }
}
