//! The compiled-component cache: keyed by plugin hash and engine, written atomically,
//! recovering from a corrupt entry.

use crate::common;

use spar_host::plugin::checker::Checker;
use spar_host::plugin::{PluginHost, SandboxConfig};

fn cwasm_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn cache_is_written_once_reused_and_repaired() {
    let dir = common::tempdir("cwasm");
    let host = PluginHost::new(SandboxConfig {
        cache_dir: Some(dir.clone()),
        ..SandboxConfig::default()
    })
    .unwrap();
    let path = common::shipped("spar_checks");
    let p = host.load(&path).unwrap();
    let files = cwasm_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&p.sha256) && name.ends_with(".cwasm"),
        "{name}"
    );
    let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();

    // Second load: served from the cache, file untouched, plugin works.
    let p2 = host.load(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        written
    );
    let mut c = Checker::from_plugin(p2).await.unwrap();
    assert!(!c.list().await.unwrap().is_empty());

    // A corrupt entry is recompiled and replaced, not trusted.
    std::fs::write(&files[0], b"garbage").unwrap();
    let p3 = host.load(&path).unwrap();
    let mut c = Checker::from_plugin(p3).await.unwrap();
    assert!(!c.list().await.unwrap().is_empty());
    assert!(std::fs::metadata(&files[0]).unwrap().len() > 1000);

    // Another plugin gets its own entry; no temporary files are left behind.
    host.load(&common::shipped("taxonomy")).unwrap();
    let files = cwasm_files(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "cwasm"))
    );
}

#[tokio::test]
async fn a_different_engine_setting_gets_a_different_entry() {
    let dir = common::tempdir("cwasm-cfg");
    let path = common::shipped("taxonomy");
    for stack in [512 << 10, 1 << 20] {
        let host = PluginHost::new(SandboxConfig {
            cache_dir: Some(dir.clone()),
            max_stack_bytes: stack,
            ..SandboxConfig::default()
        })
        .unwrap();
        host.load(&path).unwrap();
    }
    assert_eq!(cwasm_files(&dir).len(), 2);
}

#[tokio::test]
async fn an_unchanged_file_is_not_rehashed_but_a_replaced_one_is() {
    let dir = common::tempdir("cwasm-stamps");
    let host = PluginHost::new(SandboxConfig {
        cache_dir: Some(dir.clone()),
        ..SandboxConfig::default()
    })
    .unwrap();
    let work = common::tempdir("cwasm-stamps-plugin");
    let path = work.join("mine.wasm");
    std::fs::copy(common::shipped("spar_checks"), &path).unwrap();
    let a = host.load(&path).unwrap();
    let stamps: Vec<_> = std::fs::read_dir(dir.join("stamps")).unwrap().collect();
    assert_eq!(
        stamps.len(),
        1,
        "the file's sha256 is recorded with its size and mtime"
    );
    // Unchanged: the recorded sha256 (and the cached component) serve the load.
    assert_eq!(host.load(&path).unwrap().sha256, a.sha256);
    // Replaced by another plugin: size and mtime differ, so it is read and hashed again.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::copy(common::shipped("taxonomy"), &path).unwrap();
    let b = host.load(&path).unwrap();
    let expected = host.load(&common::shipped("taxonomy")).unwrap().sha256;
    assert_eq!(b.sha256, expected);
    assert_ne!(b.sha256, a.sha256);
    assert_eq!(b.kind, Some(spar_host::plugin::PluginKind::Taxonomy));
}
