//! `spar-host eval ifeval` and `spar-host bench ifeval`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use spar_host::eval::ifeval;
use spar_host::plugin::PluginHost;
use spar_host::plugin::checker::{Checker, CheckerSet};
use spar_host::score::{self, Row};

use super::model::{ModelArgs, SamplingArgs};

pub struct IfevalOpts<'a> {
    pub responses: Option<&'a Path>,
    pub data: Option<&'a Path>,
    pub out: Option<&'a Path>,
    pub plugins: &'a [String],
    pub limit: Option<usize>,
    pub batch_size: usize,
}

pub fn bar(len: usize, what: &str) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(len as u64).with_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}}, ETA {{eta}}"
        ))
        .expect("valid template"),
    )
}

/// Load the checker plugins into one set (an id goes to the plugin that lists it).
pub async fn checker_set(host: &PluginHost, plugins: &[String]) -> anyhow::Result<CheckerSet> {
    let mut checkers = Vec::new();
    for name in plugins {
        let path = PluginHost::resolve(name)?;
        checkers.push(
            Checker::load(host, &path)
                .await
                .with_context(|| format!("loading checker `{name}`"))?,
        );
    }
    Ok(CheckerSet::new(checkers).await?)
}

pub async fn ifeval_cmd(
    host: PluginHost,
    m: &ModelArgs,
    s: &SamplingArgs,
    o: IfevalOpts<'_>,
) -> anyhow::Result<()> {
    // Validate every input before loading a model or a plugin.
    let (path, generated) = match o.responses {
        Some(p) => (p.to_path_buf(), false),
        None => (
            match o.data {
                Some(d) => d.to_path_buf(),
                None => ifeval::default_data()?,
            },
            true,
        ),
    };
    let mut rows: Vec<Row> = score::read_rows_with(&path, !generated)?;
    if let Some(n) = o.limit {
        rows.truncate(n);
    }
    if rows.is_empty() {
        bail!("{}: no rows", path.display());
    }
    if let Some(out) = o.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    }
    let mut set = checker_set(&host, o.plugins).await?;
    if generated {
        let lm = m.load()?;
        let b = bar(rows.len(), "answering");
        let t = Instant::now();
        ifeval::answer(&lm, &mut rows, &s.params(), o.batch_size, |n| {
            b.set_position(n as u64)
        })?;
        b.finish_and_clear();
        eprintln!(
            "answered {} prompts with {} in {:.1} s",
            rows.len(),
            m.dir().display(),
            t.elapsed().as_secs_f64()
        );
        if let Some(out) = o.out {
            score::write_jsonl_atomic(
                &out.join("responses.jsonl"),
                &ifeval::responses_json(&rows),
            )?;
        }
    }
    let b = bar(rows.len(), "scoring");
    let scored = score::score(&mut set, &rows, |n| b.set_position(n as u64)).await;
    b.finish_and_clear();
    for sc in &scored {
        for e in &sc.errors {
            eprintln!("warning: {}: {e}", path.display());
        }
    }
    let report = ifeval::report(&scored);
    print!("{}", ifeval::render(&report));
    if let Some(out) = o.out {
        score::write_jsonl_atomic(&out.join("verdicts.jsonl"), &scored)?;
        spar_host::model::weights::write_atomic(
            &out.join("report.json"),
            &(serde_json::to_string_pretty(&report)? + "\n"),
        )?;
        println!(
            "\nwritten: {}/{{verdicts.jsonl,report.json}}",
            out.display()
        );
    }
    Ok(())
}

const SPAR_RUNS: usize = 5;
const REFERENCE_RUNS: usize = 3;

/// The plugin vs the Python reference checker on the same responses, in one run.
pub async fn bench_ifeval(
    host_cfg: impl Fn() -> anyhow::Result<PluginHost>,
    responses: Option<&Path>,
    plugin: &str,
) -> anyhow::Result<()> {
    let root = spar_host::plugin::repo_root();
    let tmp = std::env::temp_dir().join(format!("spar-bench-ifeval-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    // Default responses: every prompt answered by itself (all 541 rows, every type).
    let input: PathBuf = match responses {
        Some(p) => p.to_path_buf(),
        None => {
            let mut rows = score::read_rows_with(&ifeval::default_data()?, false)?;
            for r in rows.iter_mut() {
                r.response = r.prompt.clone();
            }
            let p = tmp.join("responses.jsonl");
            score::write_jsonl_atomic(&p, &ifeval::responses_json(&rows))?;
            p
        }
    };
    let rows = score::read_rows(&input)?;
    let path = PluginHost::resolve(plugin)?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };

    // spar, cached compile (the normal case): load + instantiate + score everything, five
    // times on a fresh host (this machine is noisy); the median is reported.
    let host = host_cfg()?;
    Checker::load(&host, &path).await?; // warm the compiled-component cache
    let (mut totals, mut loads, mut reads) = (Vec::new(), Vec::new(), Vec::new());
    let mut scored = Vec::new();
    for _ in 0..SPAR_RUNS {
        let host = host_cfg()?;
        let t = Instant::now();
        let plugin = host.load(&path)?;
        reads.push(t.elapsed().as_secs_f64());
        let mut set = CheckerSet::new(vec![Checker::from_plugin(plugin).await?]).await?;
        loads.push(t.elapsed().as_secs_f64());
        scored = score::score(&mut set, &rows, |_| {}).await;
        totals.push(t.elapsed().as_secs_f64());
    }
    let (spar_total, loaded, read) = (median(totals), median(loads), median(reads));
    // Cold: compiling the component from scratch.
    let cold_host = PluginHost::new(spar_host::plugin::SandboxConfig {
        cache_dir: None,
        ..Default::default()
    })?;
    let t = Instant::now();
    let _ = Checker::load(&cold_host, &path).await?;
    let cold = t.elapsed().as_secs_f64();

    let out = tmp.join("reference.jsonl");
    let python = root.join(".venv/bin/python");
    let (mut checks, mut walls) = (Vec::new(), Vec::new());
    for _ in 0..REFERENCE_RUNS {
        let t = Instant::now();
        let res = std::process::Command::new(&python)
            .arg(root.join("scripts/ifeval_reference.py"))
            .arg(&input)
            .arg(&out)
            .output()
            .with_context(|| format!("cannot run {}", python.display()))?;
        walls.push(t.elapsed().as_secs_f64());
        if !res.status.success() {
            bail!(
                "the reference checker failed: {}",
                String::from_utf8_lossy(&res.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
        }
        let stdout = String::from_utf8_lossy(&res.stdout);
        checks.push(
            stdout
                .split_whitespace()
                .find_map(|w| w.strip_prefix("reference_seconds="))
                .and_then(|v| v.parse().ok())
                .context("the reference printed no timing")?,
        );
    }
    let (ref_check, ref_wall) = (median(checks), median(walls));
    // Agreement, so the speed is not bought with different answers.
    let reference: Vec<serde_json::Value> = std::fs::read_to_string(&out)?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let (mut same, mut total) = (0, 0);
    for (s, r) in scored.iter().zip(&reference) {
        for (mode, ours) in [("strict", &s.strict), ("loose", &s.loose)] {
            for (i, v) in ours.iter().enumerate() {
                total += 1;
                same += (r[mode][i].as_bool() == *v) as usize;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let n_ins: usize = rows.iter().map(|r| r.instructions.len()).sum();
    println!(
        "bench ifeval: {} rows, {} instructions, strict + loose ({}); medians of {SPAR_RUNS} spar and {REFERENCE_RUNS} reference runs",
        rows.len(),
        n_ins,
        input.display()
    );
    println!(
        "  spar plugin  {:>8.3} s  (load {:.3} s: cached component {:.3} s, instantiate {:.3} s; then scoring)",
        spar_total,
        loaded,
        read,
        loaded - read
    );
    println!(
        "  reference    {:>8.3} s  checking only (process wall {:.2} s with Python start-up and imports)",
        ref_check, ref_wall
    );
    println!(
        "  ratio        {:>8.1}x  (reference checking / spar incl. plugin load)",
        ref_check / spar_total
    );
    println!("  cold compile of the plugin (first use, then cached): {cold:.2} s");
    println!(
        "  verdicts agreeing with the reference: {same}/{total} ({:.2}%)",
        100.0 * same as f64 / total.max(1) as f64
    );
    Ok(())
}
