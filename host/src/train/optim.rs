//! AdamW with decoupled weight decay (no decay on norms and biases), learning-rate schedules,
//! and gradient-norm clipping. The state is plain tensors so checkpoints can hold it.

use tch::{Kind, Tensor};

/// Learning-rate schedule after linear warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Linear,
    Constant,
    Cosine,
}

/// The learning rate at `step` (0-based) of `total` steps.
pub fn lr_at(base: f64, schedule: Schedule, warmup_ratio: f64, step: usize, total: usize) -> f64 {
    let total = total.max(1) as f64;
    let warmup = (warmup_ratio * total).ceil();
    let s = step as f64;
    if s < warmup {
        return base * (s + 1.0) / warmup;
    }
    let progress = ((s - warmup) / (total - warmup).max(1.0)).min(1.0);
    match schedule {
        Schedule::Constant => base,
        Schedule::Linear => base * (1.0 - progress),
        Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW over named parameters; names ending in `norm.weight` or `bias` get no decay.
pub struct AdamW {
    pub cfg: AdamWConfig,
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub step: i64,
}

fn decays(name: &str) -> bool {
    !(name.ends_with("bias") || name.contains("norm"))
}

impl AdamW {
    pub fn new(mut params: Vec<(String, Tensor)>, cfg: AdamWConfig) -> Self {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let m = params
            .iter()
            .map(|(_, p)| p.zeros_like().to_kind(Kind::Float))
            .collect();
        let v = params
            .iter()
            .map(|(_, p)| p.zeros_like().to_kind(Kind::Float))
            .collect();
        Self {
            cfg,
            params,
            m,
            v,
            step: 0,
        }
    }

    /// Global L2 norm of the gradients, then scale them to at most `max_norm` (0 = no clip).
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let mut sq = 0.0;
        for (_, p) in &self.params {
            let g = p.grad();
            if g.defined() {
                sq += g
                    .to_kind(Kind::Double)
                    .pow_tensor_scalar(2)
                    .sum(Kind::Double)
                    .double_value(&[]);
            }
        }
        let norm = sq.sqrt();
        if max_norm > 0.0 && norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            tch::no_grad(|| {
                for (_, p) in &self.params {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.g_mul_scalar_(scale);
                    }
                }
            });
        }
        norm
    }

    /// One update with learning rate `lr`; gradients are then zeroed.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        let bc1 = 1.0 - beta1.powi(self.step as i32);
        let bc2 = 1.0 - beta2.powi(self.step as i32);
        tch::no_grad(|| {
            for (i, (name, p)) in self.params.iter_mut().enumerate() {
                let mut g = p.grad();
                if !g.defined() {
                    continue;
                }
                let gf = g.to_kind(Kind::Float);
                let _ = self.m[i]
                    .g_mul_scalar_(beta1)
                    .g_add_(&(&gf * (1.0 - beta1)));
                let _ = self.v[i]
                    .g_mul_scalar_(beta2)
                    .g_add_(&(gf.square() * (1.0 - beta2)));
                if weight_decay > 0.0 && decays(name) {
                    let _ = p.g_mul_scalar_(1.0 - lr * weight_decay);
                }
                let update = (&self.m[i] / bc1) / ((&self.v[i] / bc2).sqrt() + eps) * lr;
                let _ = p.g_sub_(&update.to_kind(p.kind()));
                let _ = g.zero_();
            }
        });
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// Moments as named tensors (for checkpoints): `m.NAME`, `v.NAME`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            // Contiguous for the file (a parameter may be a transposed view, and its state too).
            out.push((format!("m.{name}"), self.m[i].contiguous()));
            out.push((format!("v.{name}"), self.v[i].contiguous()));
        }
        out
    }

    /// Restore moments written by [`AdamW::state`].
    pub fn load_state(&mut self, state: &[(String, Tensor)], step: i64) -> Result<(), String> {
        let map: std::collections::HashMap<&str, &Tensor> =
            state.iter().map(|(k, t)| (k.as_str(), t)).collect();
        for (i, (name, _)) in self.params.iter().enumerate() {
            let m = map
                .get(format!("m.{name}").as_str())
                .ok_or(format!("no optimizer state for {name}"))?;
            let v = map
                .get(format!("v.{name}").as_str())
                .ok_or(format!("no optimizer state for {name}"))?;
            tch::no_grad(|| {
                self.m[i].copy_(m);
                self.v[i].copy_(v);
            });
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_warm_up_then_decay() {
        let lr = |s, step| lr_at(1.0, s, 0.1, step, 100);
        assert!((lr(Schedule::Linear, 0) - 0.1).abs() < 1e-12);
        assert!((lr(Schedule::Linear, 9) - 1.0).abs() < 1e-12);
        assert!((lr(Schedule::Linear, 55) - 0.5).abs() < 0.02);
        assert!(lr(Schedule::Linear, 99) < 0.02);
        assert_eq!(lr(Schedule::Constant, 70), 1.0);
        assert!((lr(Schedule::Cosine, 55) - 0.5).abs() < 0.03);
    }

    #[test]
    fn adamw_matches_the_closed_form_first_step() {
        // First AdamW step moves each weight by lr·sign(g) (m̂/√v̂ = g/|g|), decay aside.
        let p = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
        let loss = (&p * Tensor::from_slice(&[0.5f32, -1.0, 2.0])).sum(Kind::Float);
        loss.backward();
        let mut opt = AdamW::new(
            vec![("w".into(), p.shallow_clone())],
            AdamWConfig {
                weight_decay: 0.1,
                ..Default::default()
            },
        );
        opt.step(0.01);
        let got: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        let want = [
            1.0 * (1.0 - 0.001) - 0.01,
            -2.0 * (1.0 - 0.001) + 0.01,
            3.0 * (1.0 - 0.001) - 0.01,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }
}
