//! Hostile plugins are contained: each misbehaviour ends in a clear, plugin-named error and
//! the very next call — on the same plugin and on a good one — succeeds.

use crate::common;

use spar_host::plugin::checker::Checker;
use spar_host::plugin::{GuestError, PluginError, PluginKind};

async fn pair() -> (Checker, Checker) {
    let host = common::host();
    let hostile = Checker::load(&host, &common::test_plugin("hostile"))
        .await
        .unwrap();
    let good = Checker::load(&host, &common::shipped("spar_checks"))
        .await
        .unwrap();
    (hostile, good)
}

/// After any failure, both plugins still answer.
async fn still_alive(hostile: &mut Checker, good: &mut Checker) {
    let v = hostile
        .check("ok", "{}", "p", "r")
        .await
        .expect("hostile plugin recovers");
    assert!(v.strict && v.loose);
    let v = good
        .check(
            "spar:ends_with_punctuation",
            r#"{"punctuation":"!"}"#,
            "p",
            "Done!",
        )
        .await
        .expect("good plugin unaffected");
    assert!(v.strict);
}

fn trap_message(r: Result<impl std::fmt::Debug, PluginError>) -> String {
    match r {
        Err(e @ PluginError::Trap { .. }) => {
            let s = e.to_string();
            assert!(
                s.contains("hostile 0.1.0 (sha256 "),
                "error names plugin and hash: {s}"
            );
            assert!(!s.contains('\n'), "one line: {s}");
            s
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[tokio::test]
async fn endless_loop_runs_out_of_fuel() {
    let (mut h, mut g) = pair().await;
    let m = trap_message(h.check("loop", "{}", "p", "r").await);
    assert!(m.contains("ran out of fuel"), "{m}");
    still_alive(&mut h, &mut g).await;
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    let (mut h, mut g) = pair().await;
    let m = trap_message(h.check("alloc", "{}", "p", "r").await);
    assert!(m.contains("memory limit of 64 MiB"), "{m}");
    still_alive(&mut h, &mut g).await;
}

#[tokio::test]
async fn deep_recursion_overflows_the_stack() {
    let (mut h, mut g) = pair().await;
    let m = trap_message(h.check("recurse", "{}", "p", "r").await);
    assert!(m.contains("stack overflow"), "{m}");
    still_alive(&mut h, &mut g).await;
}

#[tokio::test]
async fn panic_is_a_trap_with_the_panic_message() {
    let (mut h, mut g) = pair().await;
    let m = trap_message(h.check("panic", "{}", "p", "r").await);
    assert!(m.contains("aborted"), "{m}");
    assert!(
        m.contains("hostile plugin panics on purpose"),
        "guest stderr kept: {m}"
    );
    still_alive(&mut h, &mut g).await;
}

#[tokio::test]
async fn multi_megabyte_result_is_refused() {
    let (mut h, mut g) = pair().await;
    match h.instantiate("big", 1).await {
        Err(e @ PluginError::Invalid { .. }) => {
            let s = e.to_string();
            assert!(s.contains("8.0 MiB, over the limit of 4.0 MiB"), "{s}");
        }
        other => panic!("expected an invalid result, got {other:?}"),
    }
    still_alive(&mut h, &mut g).await;
}

fn denied(r: Result<impl std::fmt::Debug, PluginError>) -> String {
    match r {
        Err(PluginError::Guest {
            error: GuestError::Other(m),
            ..
        }) => {
            assert!(m.starts_with("denied:"), "the sandbox let it through: {m}");
            m
        }
        other => panic!("expected the plugin to report a denial, got {other:?}"),
    }
}

#[tokio::test]
async fn no_files_no_env_no_sockets() {
    let (mut h, mut g) = pair().await;
    denied(h.check("read-file", "{}", "p", "r").await);
    denied(h.check("env", "{}", "p", "r").await);
    let m = denied(h.check("socket", "{}", "p", "r").await);
    assert!(
        m.to_lowercase().contains("denied") || m.contains("AccessDenied"),
        "{m}"
    );
    still_alive(&mut h, &mut g).await;
}

#[tokio::test]
async fn wrong_world_fails_to_load_in_one_line() {
    let host = common::host();
    let p = host.load(&common::test_plugin("wrong_world")).unwrap();
    assert_eq!(p.kind, None);
    let err = match Checker::from_plugin(p).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a foreign world loaded as a checker"),
    };
    assert!(!err.contains('\n'), "{err}");
    assert!(
        err.contains("not a checker plugin")
            && err.contains("spar:constraints/checks@0.1.0")
            && err.contains("other:thing/greeter@1.0.0"),
        "{err}"
    );
    // A real plugin of another kind is refused the same way.
    let p = host.load(&common::shipped("taxonomy")).unwrap();
    assert_eq!(p.kind, Some(PluginKind::Taxonomy));
    assert!(Checker::from_plugin(p).await.is_err());
    // And a file that is no component at all.
    let junk = common::tempdir("junk").join("junk.wasm");
    std::fs::write(&junk, b"\0asm junk").unwrap();
    let e = host.load(&junk).err().expect("junk loads").to_string();
    assert!(
        e.contains("junk.wasm") && e.contains("not a valid WebAssembly component"),
        "{e}"
    );
}

#[tokio::test]
async fn a_trap_does_not_leak_into_concurrent_work() {
    // Hostile calls and good calls interleaved from several tasks of one runtime.
    let mut tasks = Vec::new();
    for i in 0..4 {
        tasks.push(tokio::spawn(async move {
            let (mut h, mut g) = pair().await;
            let bad = ["loop", "panic", "alloc", "recurse"][i];
            assert!(h.check(bad, "{}", "p", "r").await.is_err());
            still_alive(&mut h, &mut g).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
