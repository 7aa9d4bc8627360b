#!/usr/bin/env bash
# The main job until the self-play pipeline lands: score example responses against verifiable
# constraints with two checker plugins (Rust and Python), through the sandboxed plugin host.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source scripts/env.sh
./target/debug/spar-host info
./target/debug/spar-host score examples/responses.jsonl \
    --plugin spar-checks --plugin examples/python-checker/build/python_checker.wasm \
    --out runs/demo/verdicts.jsonl
