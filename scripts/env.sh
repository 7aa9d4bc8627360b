# Sourced by the scripts: the project's venv first on PATH (libtorch, componentize-py, the
# reference evaluators) and the Rust toolchain.
SPAR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SPAR_ROOT
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
export VIRTUAL_ENV="$SPAR_ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
# CI builds once in a clean clone: no incremental caches and no pip wheel cache, which only
# take disk there.
if [ "${CI:-}" = "true" ]; then
    export CARGO_INCREMENTAL=0
    export PIP_NO_CACHE_DIR=1
fi
