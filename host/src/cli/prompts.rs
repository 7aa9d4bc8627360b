//! `spar-host prompts evolve | compose | split`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use spar_host::model::generate::SamplingParams;
use spar_host::plugin::checker::{Checker, CheckerSet};
use spar_host::plugin::taxonomy::Taxonomy;
use spar_host::plugin::{PluginHost, PluginKind};
use spar_host::prompts::{self, Evolved};
use spar_host::score::write_jsonl_atomic;

#[derive(Subcommand)]
pub enum PromptsCmd {
    /// Evolve seed prompts with a model: a main constraint drawn from the taxonomy plus 1–3
    /// more, rewritten into one prompt (math/coding seeds are dropped).
    Evolve {
        #[command(flatten)]
        seeds: SeedArgs,
        /// The taxonomy plugin (name or path).
        #[arg(long, default_value = "taxonomy")]
        taxonomy: String,
        #[command(flatten)]
        model: super::model::ModelArgs,
        /// Use an OpenAI-compatible endpoint (e.g. `http://host:8000/v1`) instead of --model.
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long, default_value_t = 0.7)]
        temperature: f64,
        #[arg(long, default_value_t = 512)]
        max_new_tokens: usize,
        /// Seeds evolved at once (their generations share batches).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Compose prompts programmatically: a seed task plus 1–4 verifiable constraints drawn
    /// and instantiated by checker plugins (ids and kwargs stored for checking answers).
    Compose {
        #[command(flatten)]
        seeds: SeedArgs,
        /// Checker plugins to draw constraints from.
        #[arg(long = "plugin", default_values_t = vec!["ifeval".to_string()])]
        plugins: Vec<String>,
        #[arg(long, default_value_t = 1)]
        min: usize,
        #[arg(long, default_value_t = 4)]
        max: usize,
    },
    /// Deduplicate a prompt pool and split it for actor SFT, refiner SFT and self-play.
    Split {
        /// JSONL rows with `prompt`.
        input: PathBuf,
        /// Output directory: actor_sft.jsonl, refiner_sft.jsonl, selfplay.jsonl.
        #[arg(long)]
        out: PathBuf,
        /// Shares of actor SFT, refiner SFT and self-play (the paper: 8K, 5K, 30K).
        #[arg(long, default_value = "8,5,30")]
        shares: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Args)]
pub struct SeedArgs {
    /// Seed pool: `alpaca_eval` (805), `arena_hard` (750), or a JSONL with `prompt`/`instruction`.
    #[arg(long, default_value = "alpaca_eval")]
    seeds: String,
    /// Output JSONL.
    #[arg(long)]
    out: PathBuf,
    /// Only the first N seeds.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl SeedArgs {
    fn read(&self) -> anyhow::Result<Vec<prompts::Seed>> {
        let mut s = prompts::read_seeds(&spar_host::plugin::repo_root(), &self.seeds)?;
        if let Some(n) = self.limit {
            s.truncate(n);
        }
        Ok(s)
    }
}

fn load(
    host: &PluginHost,
    name: &str,
    kind: PluginKind,
) -> anyhow::Result<spar_host::plugin::Plugin> {
    let path = PluginHost::resolve(name)?;
    let p = host.load(&path)?;
    if p.kind != Some(kind) {
        bail!("{}: not a {kind} plugin", path.display());
    }
    Ok(p)
}

pub async fn run(host: PluginHost, cmd: PromptsCmd) -> anyhow::Result<()> {
    match cmd {
        PromptsCmd::Evolve {
            seeds,
            taxonomy,
            model,
            endpoint,
            temperature,
            max_new_tokens,
            concurrency,
        } => {
            let list = seeds.read()?;
            let plugin = load(&host, &taxonomy, PluginKind::Taxonomy)?;
            let types = Arc::new(
                prompts::type_paths(&mut Taxonomy::from_plugin(plugin.clone()).await?).await?,
            );
            let generator = super::evalsuite::generator(
                &model,
                None,
                endpoint.as_deref(),
                "evolver",
                concurrency,
            )?;
            let params = SamplingParams {
                temperature,
                top_p: 1.0,
                max_new_tokens,
                ..SamplingParams::default()
            };
            let pb = super::eval::bar(list.len(), "evolving");
            let mut results: Vec<Option<Evolved>> = vec![None; list.len()];
            let mut set = tokio::task::JoinSet::new();
            let mut next = list.into_iter().enumerate();
            loop {
                while set.len() < concurrency.max(1) {
                    let Some((i, s)) = next.next() else { break };
                    let (plugin, types, generator, params, seed) = (
                        plugin.clone(),
                        types.clone(),
                        generator.clone(),
                        params.clone(),
                        seeds.seed,
                    );
                    set.spawn(async move {
                        let r = match Taxonomy::from_plugin(plugin).await {
                            Ok(mut t) => {
                                prompts::evolve_one(
                                    &mut t, &types, &generator, &params, &s, i, seed,
                                )
                                .await
                            }
                            Err(e) => Evolved::Failed(e.to_string()),
                        };
                        (i, r)
                    });
                }
                let Some(joined) = set.join_next().await else {
                    break;
                };
                let (i, r) = joined.context("an evolution task failed")?;
                results[i] = Some(r);
                pb.inc(1);
            }
            pb.finish_and_clear();
            let (mut rows, mut dropped, mut failed) = (Vec::new(), 0, Vec::new());
            for r in results.into_iter().flatten() {
                match r {
                    Evolved::Prompt(v) => rows.push(v),
                    Evolved::Dropped => dropped += 1,
                    Evolved::Failed(e) => failed.push(e),
                }
            }
            write_jsonl_atomic(&seeds.out, &rows)?;
            println!(
                "evolved {} prompts → {}; dropped {dropped} (math/coding); failed {}{}",
                rows.len(),
                seeds.out.display(),
                failed.len(),
                failed
                    .first()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            );
        }
        PromptsCmd::Compose {
            seeds,
            plugins,
            min,
            max,
        } => {
            if min == 0 || min > max {
                bail!("--min must be at least 1 and at most --max");
            }
            let list = seeds.read()?;
            let mut checkers = Vec::new();
            for p in &plugins {
                checkers.push(Checker::from_plugin(load(&host, p, PluginKind::Checker)?).await?);
            }
            let mut set = CheckerSet::new(checkers).await?;
            let pb = super::eval::bar(list.len(), "composing");
            let mut rows = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                let draw = seeds.seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407);
                let k = min + (draw as usize % (max - min + 1));
                rows.push(prompts::compose_one(&mut set, s, k, draw).await?);
                pb.inc(1);
            }
            pb.finish_and_clear();
            write_jsonl_atomic(&seeds.out, &rows)?;
            println!("composed {} prompts → {}", rows.len(), seeds.out.display());
        }
        PromptsCmd::Split {
            input,
            out,
            shares,
            seed,
        } => {
            let rows = prompts::read_prompt_rows(&input)?;
            let parts: Vec<f64> = shares
                .split(',')
                .map(|s| s.trim().parse::<f64>())
                .collect::<Result<_, _>>()
                .with_context(|| format!("--shares `{shares}`: three numbers, e.g. 8,5,30"))?;
            let [a, b, c] = parts[..] else {
                bail!("--shares `{shares}`: three numbers, e.g. 8,5,30");
            };
            let s = prompts::split(rows, [a, b, c], seed)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            for (name, rows) in [
                ("actor_sft.jsonl", &s.actor_sft),
                ("refiner_sft.jsonl", &s.refiner_sft),
                ("selfplay.jsonl", &s.selfplay),
            ] {
                write_jsonl_atomic(&out.join(name), rows)?;
            }
            println!(
                "{} duplicates dropped; actor SFT {}, refiner SFT {}, self-play {} → {}",
                s.duplicates,
                s.actor_sft.len(),
                s.refiner_sft.len(),
                s.selfplay.len(),
                out.display()
            );
        }
    }
    Ok(())
}
