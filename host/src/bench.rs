//! Benchmark commands: they print measurements side by side, never assert on time.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::plugin::checker::Checker;
use crate::plugin::{PluginHost, SandboxConfig};

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Per-call overhead of `check` on a 1 KB response, instantiate time, and load time cold
/// (compile) vs cached, for one checker plugin.
pub async fn plugins(path: &Path, calls: usize) -> anyhow::Result<String> {
    let cache = tempdir("spar-bench-cache")?;
    let config = SandboxConfig {
        cache_dir: Some(cache.clone()),
        ..SandboxConfig::default()
    };
    let host = PluginHost::new(config)?;

    let mut cold = Vec::new();
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(&cache);
        let t = Instant::now();
        host.load(path)?;
        cold.push(t.elapsed());
    }
    let mut cached = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        host.load(path)?;
        cached.push(t.elapsed());
    }
    let mut checker = Checker::from_plugin(host.load(path)?).await?;
    let mut inst = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        checker.fresh_instance().await?;
        inst.push(t.elapsed());
    }
    let specs = checker.list().await?;
    let spec = specs
        .first()
        .ok_or_else(|| anyhow::anyhow!("{} lists no instruction", checker.label()))?;
    let instance = checker.instantiate(&spec.id, 0).await?;
    let kwargs = serde_json::Value::Object(instance.kwargs).to_string();
    let response: String = "The river runs to the sea, and the sea is never full. "
        .repeat(20)
        .chars()
        .take(1024)
        .collect();
    let prompt = format!("Write about rivers. {}", instance.text);
    for _ in 0..100 {
        checker.check(&spec.id, &kwargs, &prompt, &response).await?;
    }
    let mut per_call = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        checker.check(&spec.id, &kwargs, &prompt, &response).await?;
        per_call.push(t.elapsed());
    }
    let _ = std::fs::remove_dir_all(&cache);
    for v in [&mut cold, &mut cached, &mut inst, &mut per_call] {
        v.sort();
    }
    let call_med = quantile(&per_call, 0.5);
    let cached_med = quantile(&cached, 0.5);
    let mut out = String::new();
    out.push_str(&format!(
        "plugin {} · instruction `{}` · 1 KB response · {calls} calls\n",
        checker.label(),
        spec.id
    ));
    out.push_str(&format!(
        "{:<28}{:>14}{:>14}{:>12}\n",
        "measure", "value", "target", "headroom"
    ));
    let row = |name: &str, v: f64, unit: &str, target: Option<f64>| {
        let (t, h) = match target {
            Some(t) => (format!("< {t} {unit}"), format!("{:.1}×", t / v)),
            None => ("".into(), "".into()),
        };
        format!("{name:<28}{:>14}{t:>14}{h:>12}\n", format!("{v:.2} {unit}"))
    };
    out.push_str(&row("check call, median", us(call_med), "µs", Some(2.0)));
    out.push_str(&row(
        "check call, p99",
        us(quantile(&per_call, 0.99)),
        "µs",
        None,
    ));
    out.push_str(&row(
        "instantiate, median",
        us(quantile(&inst, 0.5)),
        "µs",
        None,
    ));
    out.push_str(&row(
        "load cold (compile), median",
        quantile(&cold, 0.5).as_secs_f64() * 1e3,
        "ms",
        None,
    ));
    out.push_str(&row(
        "load cached, median",
        cached_med.as_secs_f64() * 1e3,
        "ms",
        Some(5.0),
    ));
    out.push_str(&format!(
        "cached load is {:.0}× faster than a cold load\n",
        quantile(&cold, 0.5).as_secs_f64() / cached_med.as_secs_f64()
    ));
    Ok(out)
}

fn tempdir(prefix: &str) -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
