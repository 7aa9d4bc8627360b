#!/usr/bin/env bash
# The main job on the embedded default model (SmolLM2-135M-Instruct), until the self-play
# pipeline lands: the model answers prompts that carry verifiable constraints (batched
# generation in libtorch), then two checker plugins — one in Rust, one in Python — score the
# answers through the sandboxed plugin host.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source scripts/env.sh
spar=./target/debug/spar-host
$spar info
$spar generate --input examples/prompts.jsonl --out runs/demo/answers.jsonl \
    --max-new-tokens 160 --batch-size 8
$spar score runs/demo/answers.jsonl \
    --plugin spar-checks --plugin examples/python-checker/build/python_checker.wasm \
    --out runs/demo/verdicts.jsonl
echo "answers: runs/demo/answers.jsonl"
