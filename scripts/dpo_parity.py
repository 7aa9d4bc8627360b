"""Reference numbers for spar's DPO loss and gradients (tests/fixtures/dpo_parity.json).

A tiny Llama (the shape of spar's `model::tiny` test models) gets deterministic weights from a
formula both sides implement (parameter k of the sorted names, element j:
0.05·sin(0.1·(j+1) + 0.7·k), plus 1 for norms), so no weights are stored. The loss is TRL's
sigmoid DPO plus `rpo_alpha` × the mean per-token NLL of the chosen responses:

    loss = mean(-logsigmoid(β·((πc − πr) − (ref_c − ref_r)))) + α · NLL(chosen)

Rerun: HF_HUB_OFFLINE=1 .venv/bin/python scripts/dpo_parity.py
"""

import json
import math
import os

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "dpo_parity.json")

CONFIG = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=64, max_position_embeddings=256, rms_norm_eps=1e-5,
              rope_theta=10000.0, tie_word_embeddings=True, attention_bias=False)
CHOSEN = [[4, 5, 6, 10, 11, 12], [4, 8, 6, 13, 14, 15]]
REJECTED = [[4, 5, 6, 20, 21, 22], [4, 8, 6, 23, 24, 25]]
# mask[t] = 1 where token t+1 belongs to the response
MASK = [[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]]
REF_CHOSEN = [-12.5, -13.0]
REF_REJECTED = [-12.0, -14.5]
BETA, ALPHA = 0.1, 0.1


def build():
    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(**CONFIG)).eval()
    names = sorted(n for n, _ in m.named_parameters())
    params = dict(m.named_parameters())
    with torch.no_grad():
        for k, name in enumerate(names):
            p = params[name]
            j = torch.arange(p.numel(), dtype=torch.float64)
            v = torch.sin(0.1 * (j + 1) + 0.7 * k) * 0.05
            if "norm" in name:
                v = v + 1.0
            p.copy_(v.view(p.shape).to(p.dtype))
    return m, names


def token_logps(m, ids):
    logits = m(torch.tensor(ids)).logits.float()
    lp = logits[:, :-1].log_softmax(-1)
    return lp.gather(2, torch.tensor(ids)[:, 1:].unsqueeze(-1)).squeeze(-1)


def main():
    torch.set_num_threads(1)
    m, names = build()
    mask = torch.tensor(MASK, dtype=torch.float32)
    lc, lr = token_logps(m, CHOSEN), token_logps(m, REJECTED)
    pc, pr = (lc * mask).sum(-1), (lr * mask).sum(-1)
    rc, rr = torch.tensor(REF_CHOSEN), torch.tensor(REF_REJECTED)
    dpo = -F.logsigmoid(BETA * ((pc - pr) - (rc - rr)))
    nll = -(lc * mask).sum() / mask.sum()
    loss = dpo.mean() + ALPHA * nll
    loss.backward()
    params = dict(m.named_parameters())
    grads = {n: params[n].grad for n in names}
    out = {
        "description": __doc__.strip().splitlines()[0],
        "torch": torch.__version__,
        "config": CONFIG, "chosen": CHOSEN, "rejected": REJECTED, "mask": MASK,
        "ref_chosen": REF_CHOSEN, "ref_rejected": REF_REJECTED, "beta": BETA, "alpha": ALPHA,
        "policy_chosen": pc.tolist(), "policy_rejected": pr.tolist(),
        "loss": loss.item(),
        "grad_norm": math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values())),
        "grad_sums": {n: float(g.double().sum()) for n, g in grads.items()},
        "grad_abs_sums": {n: float(g.double().abs().sum()) for n, g in grads.items()},
        "grad_samples": {n: g.flatten()[:16].tolist() for n, g in grads.items()},
    }
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {OUT}: loss {out['loss']:.8f}, grad norm {out['grad_norm']:.8f}")


if __name__ == "__main__":
    main()
