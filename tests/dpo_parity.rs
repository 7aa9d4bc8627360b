//! The DPO + SFT loss and its gradients on a tiny model equal a PyTorch computation of the same
//! formula (TRL's sigmoid DPO + rpo_alpha NLL). Fixture: `scripts/dpo_parity.py`.

use serde_json::Value;
use spar_host::model::{Llama, ModelConfig, tiny::fill_deterministic};
use spar_host::train::loss::{dpo_loss, sequence_logps};
use tch::{Device, Kind, Tensor};

fn rows(v: &Value) -> Tensor {
    let r: Vec<Vec<i64>> = serde_json::from_value(v.clone()).unwrap();
    let (b, t) = (r.len() as i64, r[0].len() as i64);
    Tensor::from_slice(&r.concat()).view([b, t])
}

fn floats(v: &Value) -> Tensor {
    let x: Vec<f32> = serde_json::from_value(v.clone()).unwrap();
    Tensor::from_slice(&x)
}

#[test]
fn dpo_loss_and_gradients_match_pytorch() {
    let path = spar_host::plugin::repo_root().join("tests/fixtures/dpo_parity.json");
    let f: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut cfg = f["config"].clone();
    cfg["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    let cfg: ModelConfig = serde_json::from_value(cfg).unwrap();
    let m = Llama::new(cfg, Device::Cpu);
    fill_deterministic(&m.vs);
    let (chosen, rejected, mask) = (rows(&f["chosen"]), rows(&f["rejected"]), rows(&f["mask"]));
    let attn = chosen.ones_like();
    let lc = m.token_logprobs(&chosen, &attn);
    let lr = m.token_logprobs(&rejected, &attn);
    let (pc, pr) = (sequence_logps(&lc, &mask), sequence_logps(&lr, &mask));
    let diff = (&pc - floats(&f["policy_chosen"]))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff < 1e-4, "policy chosen log-probs differ by {diff}");
    let out = dpo_loss(
        (&pc, &pr),
        (&floats(&f["ref_chosen"]), &floats(&f["ref_rejected"])),
        f["beta"].as_f64().unwrap(),
        f["alpha"].as_f64().unwrap(),
        &lc,
        &mask,
    );
    let loss = out.loss.double_value(&[]);
    assert!(
        (loss - f["loss"].as_f64().unwrap()).abs() < 1e-5,
        "loss {loss} vs {}",
        f["loss"]
    );
    out.loss.backward();
    let vars = m.vs.variables();
    let mut sq = 0.0;
    for (name, want) in f["grad_samples"].as_object().unwrap() {
        let g = vars[name].grad();
        sq += g
            .to_kind(Kind::Double)
            .square()
            .sum(Kind::Double)
            .double_value(&[]);
        let n = want.as_array().unwrap().len() as i64;
        let d = (g.flatten(0, -1).narrow(0, 0, n) - floats(want))
            .abs()
            .max()
            .double_value(&[]);
        assert!(d < 1e-5, "{name}: gradient differs by {d}");
        let s = g.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
        let want_s = f["grad_sums"][name].as_f64().unwrap();
        assert!(
            (s - want_s).abs() < 1e-5 * (1.0 + want_s.abs()),
            "{name}: sum {s} vs {want_s}"
        );
    }
    assert_eq!(vars.len(), f["grad_samples"].as_object().unwrap().len());
    let norm = sq.sqrt();
    assert!(
        (norm - f["grad_norm"].as_f64().unwrap()).abs() < 1e-5 * norm,
        "grad norm {norm}"
    );
}
