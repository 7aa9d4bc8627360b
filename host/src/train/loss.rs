//! Objectives on sequence log-probabilities, as TRL defines them.

use tch::{Kind, Tensor};

/// Sum of token log-probs over the masked (completion) positions of each row: `[B]`.
pub fn sequence_logps(token_logps: &Tensor, loss_mask: &Tensor) -> Tensor {
    (token_logps * loss_mask.to_kind(Kind::Float)).sum_dim_intlist(-1, false, Kind::Float)
}

/// The outputs of one DPO step.
pub struct DpoOut {
    pub loss: Tensor,
    /// β·(log πθ(y_w) − log π_ref(y_w)), per row.
    pub chosen_rewards: Tensor,
    pub rejected_rewards: Tensor,
}

/// Sigmoid DPO (Rafailov et al.) plus `sft_weight` × the mean per-token NLL of the chosen
/// responses under the policy (TRL's `rpo_alpha`; SPaR uses 0.1).
///
/// `policy` and `reference` are (chosen, rejected) summed sequence log-probs `[B]`;
/// `chosen_token_logps` `[B, T]` with `chosen_mask` give the NLL term.
pub fn dpo_loss(
    (policy_chosen, policy_rejected): (&Tensor, &Tensor),
    (ref_chosen, ref_rejected): (&Tensor, &Tensor),
    beta: f64,
    sft_weight: f64,
    chosen_token_logps: &Tensor,
    chosen_mask: &Tensor,
) -> DpoOut {
    let logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected);
    let dpo = -(logits * beta).log_sigmoid();
    let mut loss = dpo.mean(Kind::Float);
    if sft_weight != 0.0 {
        let m = chosen_mask.to_kind(Kind::Float);
        let nll = -(chosen_token_logps * &m).sum(Kind::Float) / m.sum(Kind::Float).clamp_min(1.0);
        // Not `+=` (in place on an autograd result).
        #[allow(clippy::assign_op_pattern)]
        {
            loss = loss + nll * sft_weight;
        }
    }
    DpoOut {
        loss,
        chosen_rewards: (policy_chosen - ref_chosen).detach() * beta,
        rejected_rewards: (policy_rejected - ref_rejected).detach() * beta,
    }
}

/// Mean per-token negative log-likelihood over the masked positions (SFT, RFT).
pub fn sft_loss(token_logps: &Tensor, loss_mask: &Tensor) -> Tensor {
    let m = loss_mask.to_kind(Kind::Float);
    -(token_logps * &m).sum(Kind::Float) / m.sum(Kind::Float).clamp_min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::tests::tiny;
    use crate::train::optim::{AdamW, AdamWConfig};
    use tch::Device;

    #[test]
    fn dpo_training_raises_the_chosen_margin() {
        let m = tiny(21);
        // Rows: [prompt 3 tokens | response 3 tokens]; the loss mask covers the response.
        let chosen =
            Tensor::from_slice(&[4i64, 5, 6, 10, 11, 12, 4, 8, 6, 13, 14, 15]).view([2, 6]);
        let rejected =
            Tensor::from_slice(&[4i64, 5, 6, 20, 21, 22, 4, 8, 6, 23, 24, 25]).view([2, 6]);
        let attn = Tensor::ones([2, 6], (Kind::Int64, Device::Cpu));
        // token_logprobs[t] scores token t+1: the response tokens are entries 2..5.
        let mask = Tensor::from_slice(&[0i64, 0, 1, 1, 1, 0, 0, 1, 1, 1]).view([2, 5]);
        let (rc, rr) = tch::no_grad(|| {
            (
                sequence_logps(&m.token_logprobs(&chosen, &attn), &mask),
                sequence_logps(&m.token_logprobs(&rejected, &attn), &mask),
            )
        });
        let params: Vec<(String, Tensor)> = m.vs.variables().into_iter().collect();
        let mut opt = AdamW::new(params, AdamWConfig::default());
        let margin = |out: &DpoOut| {
            (&out.chosen_rewards - &out.rejected_rewards)
                .mean(Kind::Float)
                .double_value(&[])
        };
        let mut first = None;
        let mut last = 0.0;
        for _ in 0..15 {
            let lc = m.token_logprobs(&chosen, &attn);
            let lr = m.token_logprobs(&rejected, &attn);
            let out = dpo_loss(
                (&sequence_logps(&lc, &mask), &sequence_logps(&lr, &mask)),
                (&rc, &rr),
                0.1,
                0.1,
                &lc,
                &mask,
            );
            out.loss.backward();
            opt.step(1e-2);
            last = margin(&out);
            first.get_or_insert(last);
        }
        assert!(
            first == Some(0.0),
            "the policy starts as the reference: {first:?}"
        );
        assert!(last > 0.05, "margin after training {last}");
    }
}
