# Sourced by the scripts: the project's venv first on PATH (libtorch, componentize-py, the
# reference evaluators) and the Rust toolchain.
SPAR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SPAR_ROOT
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
export VIRTUAL_ENV="$SPAR_ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
