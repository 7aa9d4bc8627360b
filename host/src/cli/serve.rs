//! `spar-host serve`.

use std::io::Write;

use anyhow::Context;
use spar_host::model::generate::Engine;
use spar_host::serve::{ServeOptions, serve};

/// Load the model, bind, print the address, serve until SIGINT or SIGTERM.
pub async fn serve_cmd(
    model: &super::model::ModelArgs,
    host: &str,
    port: u16,
    name: Option<String>,
    api_key: Option<String>,
    max_batch_rows: usize,
) -> anyhow::Result<()> {
    let dir = model.dir();
    let lm = model.load()?;
    let name = name.unwrap_or_else(|| {
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "spar".into())
    });
    let engine = Engine::start(lm, max_batch_rows)?;
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port}"))?;
    let addr = listener.local_addr()?;
    println!("spar-host serve: model `{name}` on http://{addr}/v1");
    std::io::stdout().flush()?;
    serve(
        listener,
        engine,
        ServeOptions {
            model_name: name,
            api_key,
        },
        shutdown_signal(),
    )
    .await?;
    println!("spar-host serve: stopped");
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM: stop accepting, finish what is in flight.
async fn shutdown_signal() {
    let int = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = int.await;
                    return;
                }
            };
        tokio::select! {
            _ = int => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = int.await;
}
