#!/usr/bin/env bash
# The main job on the embedded default model (SmolLM2-135M-Instruct): one full SPaR self-play
# iteration on a CPU (configs/demo.toml) — the actor samples answers, the checker plugins value
# them, the BFS plugin searches refinement trees with the refiner (all trees concurrently, their
# model calls batched), then DPO pairs and refiner data are built and both models are trained.
# A stopped demo continues where it stopped; a finished one starts over.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source scripts/env.sh
spar=./target/debug/spar-host
run_dir=runs/demo
if [ -f "$run_dir/manifest.json" ] && grep -q '"finished": true' "$run_dir/manifest.json"; then
    rm -rf "$run_dir"
fi
$spar info
$spar run --config configs/demo.toml --set "run_dir=\"$run_dir\""
echo "artifacts: $run_dir/iter-1 (samples, judgments, roots, trees, pairs, rft); manifest: $run_dir/manifest.json"
echo "loss plots: $run_dir/iter-1/actor/loss.png $run_dir/iter-1/refiner/loss.png"
