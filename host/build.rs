//! Bake libtorch's folder into the rpath of every binary of this crate (the CLI, tests,
//! benches), so nothing needs LD_LIBRARY_PATH at run time.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_LIB");
    let lib = std::env::var("LIBTORCH_LIB")
        .or_else(|_| std::env::var("LIBTORCH"))
        .map(|p| std::path::PathBuf::from(p).join("lib"));
    if let Ok(lib) = lib {
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
