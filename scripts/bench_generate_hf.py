"""The HF transformers side of `spar-host bench generate`: greedy generate() on the same model
directory, prompts, batch sizes and token counts; prints one JSON line per batch size.

Usage: python scripts/bench_generate_hf.py --model DIR --prompts FILE.json --new-tokens N --batch-sizes 1,16
"""

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402


def peak_rss_mb():
    # VmHWM, not getrusage: ru_maxrss survives execve and would report the parent's peak.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True, help="JSON list of token-id lists")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(args.device).eval()
    prompts = json.load(open(args.prompts))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        batch = prompts[:bs]
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=args.device)
        attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=args.device)
        kw = dict(attention_mask=attn, do_sample=False, max_new_tokens=args.new_tokens,
                  min_new_tokens=args.new_tokens, pad_token_id=pad)
        with torch.no_grad():
            model.generate(ids[:, :8], attention_mask=attn[:, :8], do_sample=False,
                           max_new_tokens=2, pad_token_id=pad)  # warm-up
            t = time.perf_counter()
            out = model.generate(ids, **kw)
            secs = time.perf_counter() - t
        new = (out.shape[1] - width) * len(batch)
        print(json.dumps({"impl": "transformers", "batch": bs, "tokens": new, "seconds": secs,
                          "tokens_per_s": new / secs,
                          "peak_rss_mb": peak_rss_mb()}),
              flush=True)


if __name__ == "__main__":
    main()
