"""The TRL side of `spar-host bench train`: one DPO epoch with TRL's DPOTrainer on CPU, on the
same model directory, data, batch size, sequence length and precision; prints one JSON line.

Usage: python scripts/bench_train_trl.py --model DIR --data pairs.jsonl --batch-size 8 \
           --micro-batch-size 2 --max-length 256 --out DIR
"""

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--micro-batch-size", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-6)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    data = load_dataset("json", data_files=args.data, split="train")
    steps = -(-len(data) // args.batch_size)
    cfg = DPOConfig(
        output_dir=args.out, per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=args.batch_size // args.micro_batch_size,
        num_train_epochs=1, learning_rate=args.lr, beta=0.1,
        # SPaR's objective: sigmoid DPO + 0.1 × SFT on the chosen (TRL ≥ 1.0 spelling).
        loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.1],
        max_length=args.max_length, lr_scheduler_type="linear", warmup_steps=max(1, -(-steps // 10)),
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
        dataloader_num_workers=0, seed=42,
    )
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok)
    trainer.train()
    secs = time.perf_counter() - t
    loss = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(json.dumps({"impl": "trl", "seconds": secs, "steps": trainer.state.global_step,
                      "first_loss": loss[0] if loss else None, "peak_rss_mb": peak_rss_mb()}),
          flush=True)


if __name__ == "__main__":
    main()
