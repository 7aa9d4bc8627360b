//! `spar-host report RUN_DIR`: a markdown report with PNG plots of every metric across the
//! iterations of a run.
//!
//! Sources: the run's `manifest.json` (stage counts and times), each iteration's training
//! logs (`iter-T/actor/metrics.jsonl`, `iter-T/refiner/metrics.jsonl`), and the evaluations
//! written into the run with `--out RUN_DIR/iter-T/eval/NAME` (`iter-0` for the starting
//! models): `ifeval/report.json`, `followbench/metrics.json`, `llmbar/metrics.json`,
//! `refine/metrics.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::plot::line_chart;

/// The metric series of a run: metric → (iteration, value).
type Series = BTreeMap<String, Vec<(f64, f64)>>;

fn read_json(p: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

/// `iter-T` directories of the run, by T.
fn iterations(run: &Path) -> anyhow::Result<Vec<(usize, PathBuf)>> {
    let mut its: Vec<(usize, PathBuf)> = std::fs::read_dir(run)
        .with_context(|| format!("cannot read {}", run.display()))?
        .flatten()
        .filter_map(|e| {
            let t = e
                .file_name()
                .to_str()?
                .strip_prefix("iter-")?
                .parse()
                .ok()?;
            Some((t, e.path()))
        })
        .collect();
    its.sort();
    Ok(its)
}

/// The evaluation metrics found for one iteration: (name, value) pairs.
fn eval_metrics(dir: &Path) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let e = dir.join("eval");
    if let Some(v) = read_json(&e.join("ifeval/report.json")) {
        for k in [
            "prompt_strict",
            "prompt_loose",
            "instruction_strict",
            "instruction_loose",
        ] {
            if let Some(x) = v[k].as_f64() {
                out.push((format!("IFEval {k}"), 100.0 * x));
            }
        }
    }
    if let Some(v) = read_json(&e.join("followbench/metrics.json")) {
        for k in ["hsr_avg", "ssr_avg", "csl"] {
            if let Some(x) = v[k].as_f64() {
                out.push((format!("FollowBench {k}"), x));
            }
        }
    }
    if let Some(v) = read_json(&e.join("llmbar/metrics.json")) {
        for (subset, m) in v["subsets"].as_object().into_iter().flatten() {
            if let Some(x) = m["pairwise_accuracy"].as_f64() {
                out.push((format!("LLMBar {subset} pairwise acc"), x));
            }
        }
        for k in ["pairwise_accuracy", "pointwise_accuracy", "pointwise_f1"] {
            if let Some(x) = v["adversarial"][k].as_f64() {
                out.push((format!("LLMBar Adversarial {k}"), x));
            }
        }
    }
    if let Some(x) = read_json(&e.join("refine/metrics.json")).and_then(|v| v["accuracy"].as_f64())
    {
        out.push(("refinement accuracy".into(), x));
    }
    out
}

/// Mean training loss of a model's log, and its last step's loss.
fn training(dir: &Path) -> Option<(f64, Vec<(f64, f64)>)> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).ok()?;
    let pts: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_f64()?, v["loss"].as_f64()?)))
        .collect();
    if pts.is_empty() {
        return None;
    }
    let mean = pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64;
    Some((mean, pts))
}

/// Safe file name for a metric.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect::<String>()
        .split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

/// Write `RUN_DIR/report.md` and `RUN_DIR/report/*.png`; returns the report's path.
pub fn write(run: &Path) -> anyhow::Result<PathBuf> {
    let manifest = read_json(&run.join("manifest.json"));
    let its = iterations(run)?;
    if manifest.is_none() && its.is_empty() {
        bail!(
            "{}: not a run directory (no manifest.json, no iter-*/)",
            run.display()
        );
    }
    let plots = run.join("report");
    std::fs::create_dir_all(&plots)
        .with_context(|| format!("cannot create {}", plots.display()))?;
    let mut series: Series = BTreeMap::new();
    let mut md = format!("# SPaR run report: {}\n\n", run.display());

    // Stages per iteration, from the manifest.
    if let Some(m) = &manifest {
        md.push_str(
            "## Iterations\n\n| iteration | stage | seconds | counts |\n|---|---|---|---|\n",
        );
        for it in m["iterations"].as_array().into_iter().flatten() {
            let t = it["iteration"].as_u64().unwrap_or(0);
            for s in it["stages"].as_array().into_iter().flatten() {
                let counts: Vec<String> = s["counts"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| {
                        format!("{k} {}", v.as_f64().map_or("-".into(), |x| format!("{x}")))
                    })
                    .collect();
                md.push_str(&format!(
                    "| {t} | {} | {:.1} | {} |\n",
                    s["name"].as_str().unwrap_or("?"),
                    s["seconds"].as_f64().unwrap_or(0.0),
                    counts.join(", ")
                ));
                for (k, v) in s["counts"].as_object().into_iter().flatten() {
                    if let (Some(x), Some(stage)) = (v.as_f64(), s["name"].as_str())
                        && matches!(
                            (stage, k.as_str()),
                            ("search", "solved") | ("data", "pairs") | ("judge", "agreement")
                        )
                    {
                        series
                            .entry(format!("{stage} {k}"))
                            .or_default()
                            .push((t as f64, x));
                    }
                }
            }
        }
        md.push('\n');
    }

    // Training curves and evaluations per iteration.
    let mut loss_md = String::new();
    for (t, dir) in &its {
        for role in ["actor", "refiner"] {
            if let Some((mean, pts)) = training(&dir.join(role)) {
                series
                    .entry(format!("{role} mean training loss"))
                    .or_default()
                    .push((*t as f64, mean));
                let png = plots.join(format!("iter{t}_{role}_loss.png"));
                line_chart(&png, "loss", &[("loss", pts)])
                    .with_context(|| format!("cannot write {}", png.display()))?;
                loss_md.push_str(&format!(
                    "- iteration {t}, {role}: mean loss {mean:.4} — ![{role} loss, iteration {t}](report/{})\n",
                    png.file_name().unwrap().to_string_lossy()
                ));
            }
        }
        for (k, v) in eval_metrics(dir) {
            series.entry(k).or_default().push((*t as f64, v));
        }
    }
    if !loss_md.is_empty() {
        md.push_str("## Training\n\n");
        md.push_str(&loss_md);
        md.push('\n');
    }

    md.push_str("## Metrics across iterations\n\n");
    if series.is_empty() {
        md.push_str(
            "No metrics yet: evaluate into the run with `--out RUN_DIR/iter-T/eval/NAME`.\n",
        );
    }
    for (name, pts) in &series {
        let png = plots.join(format!("{}.png", slug(name)));
        line_chart(&png, name, &[(name.as_str(), pts.clone())])
            .with_context(|| format!("cannot write {}", png.display()))?;
        let values: Vec<String> = pts
            .iter()
            .map(|(t, v)| format!("iter {t}: {v:.2}"))
            .collect();
        md.push_str(&format!(
            "### {name}\n\n{}\n\n![{name}](report/{})\n\n",
            values.join(" · "),
            png.file_name().unwrap().to_string_lossy()
        ));
    }
    let out = run.join("report.md");
    crate::model::weights::write_atomic(&out, &md)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs() {
        assert_eq!(
            super::slug("LLMBar Adversarial pointwise_f1"),
            "llmbar_adversarial_pointwise_f1"
        );
        assert_eq!(super::slug("IFEval prompt_strict"), "ifeval_prompt_strict");
    }
}
