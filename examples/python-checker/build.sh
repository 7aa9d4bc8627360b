#!/usr/bin/env bash
# Build the Python checker into build/python_checker.wasm with componentize-py (from PyPI).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cpy="${COMPONENTIZE_PY:-$root/.venv/bin/componentize-py}"
out="$here/build/python_checker.wasm"
# componentize-py wants one WIT folder with its dependencies under deps/.
wit="$here/build/wit"
rm -rf "$wit" && mkdir -p "$wit/deps/types"
cp "$root"/wit/constraints/*.wit "$wit/"
cp "$root"/wit/types/*.wit "$wit/deps/types/"
if [ -f "$out" ] && [ -z "$(find "$here/app.py" "$root/wit" -newer "$out" -print -quit)" ]; then
    exit 0
fi
cd "$here"
"$cpy" -d "$wit" -w spar:constraints/checker@0.1.0 \
    componentize app -o "$out.tmp" >/dev/null
mv "$out.tmp" "$out"
echo "built $out"
