//! `http-probe`: an MCP server over HTTP for the sandbox's end-to-end tests (see `thv_sandbox_e2e::http_server`
//! for its tools).
//!
//! `http-probe [--transport streamable-http|sse] [--port PORT] [--host ADDR] [--json]`: listens on ADDR:PORT
//! (default `127.0.0.1:8080`), streamable HTTP at `/mcp` or legacy SSE at `/sse` + `/messages`; `--json` makes
//! the streamable server answer with JSON bodies (rmcp's stateless mode). It writes noise to its own stdout at
//! start and on every tool call — a bridge must never let that reach its client — and `listening on ADDR` to
//! stderr once it accepts connections. SIGTERM and SIGINT end it with status 0 (it may be a pid namespace's
//! init, which gets no default signal actions). With `HTTP_PROBE_DEFAULT_SIGNALS=1` in its environment it installs
//! no signal handler at all, like most Node.js and Python servers: as a pid namespace's init it then ignores
//! SIGTERM unless its runtime does something about it.

use std::process::ExitCode;

use thv_sandbox_e2e::http_server::{serve_sse, serve_streamable};

fn usage(msg: &str) -> ExitCode {
    eprintln!("http-probe: {msg}\nusage: http-probe [--transport streamable-http|sse] [--port PORT] [--host ADDR] [--json]");
    ExitCode::from(2)
}

#[allow(clippy::print_stdout)]
fn main() -> ExitCode {
    let mut transport = "streamable-http".to_owned();
    let mut port = 8080u16;
    let mut host = "127.0.0.1".to_owned();
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--transport" => match args.next() {
                Some(t) if t == "streamable-http" || t == "sse" => transport = t,
                _ => return usage("--transport wants streamable-http or sse"),
            },
            "--port" => match args.next().and_then(|p| p.parse().ok()) {
                Some(p) => port = p,
                None => return usage("--port wants a port number"),
            },
            "--host" => match args.next() {
                Some(h) => host = h,
                None => return usage("--host wants an address"),
            },
            "--json" => json = true,
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    println!("http-probe: starting (this line is noise on the server's stdout)");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("http-probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let addr = format!("{host}:{port}");
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("http-probe: binding {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("http-probe: listening on {addr} ({transport})");
        let serve = async move {
            if transport == "sse" {
                serve_sse(listener, true).await;
            } else {
                serve_streamable(listener, true, json).await;
            }
        };
        if std::env::var_os("HTTP_PROBE_DEFAULT_SIGNALS").is_some_and(|v| v == "1") {
            serve.await;
            return ExitCode::SUCCESS;
        }
        let (Ok(mut term), Ok(mut int)) = (
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        ) else {
            eprintln!("http-probe: cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        tokio::select! {
            _ = serve => ExitCode::SUCCESS,
            _ = term.recv() => ExitCode::SUCCESS,
            _ = int.recv() => ExitCode::SUCCESS,
        }
    })
}
