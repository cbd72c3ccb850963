//! Ordinary servers work under the default profile and the strict variant: a Python and a Node.js program serve HTTP
//! on loopback and fetch from themselves, start child processes and threads, list network
//! interfaces and read random bytes, all in a forked child that loaded the filter the way the
//! runtime does.
//!
//! An interpreter that is not installed is reported and skipped; set
//! `THV_SANDBOX_REQUIRE_INTERPRETERS=1` to make that a failure (CI images that have both).

mod common;

use std::path::PathBuf;
use std::process::Command;

const PYTHON_SERVER: &str = r#"
import asyncio, http.server, multiprocessing, os, socket, subprocess, threading, urllib.request

class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hi")
    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
threading.Thread(target=server.serve_forever, daemon=True).start()
assert urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/").read() == b"hi"
subprocess.run(["/bin/true"], check=True)

async def child():
    proc = await asyncio.create_subprocess_exec("/bin/true")
    assert await proc.wait() == 0
asyncio.run(child())

with multiprocessing.get_context("fork").Pool(2) as pool:
    assert pool.map(abs, [-1, -2]) == [1, 2]
assert socket.if_nameindex()
assert len(os.urandom(16)) == 16
server.shutdown()
print("ok")
"#;

const NODE_SERVER: &str = r#"
const http = require('http');
const childProcess = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const { Worker } = require('worker_threads');

const server = http.createServer((req, res) => res.end('hi'));
server.listen(0, '127.0.0.1', () => {
  http.get({ host: '127.0.0.1', port: server.address().port, path: '/' }, (res) => {
    let body = '';
    res.on('data', (chunk) => { body += chunk; });
    res.on('end', async () => {
      if (body !== 'hi') throw new Error(`unexpected body ${body}`);
      childProcess.execFileSync('/bin/true');
      await new Promise((resolve, reject) => {
        childProcess.execFile('/bin/true', (err) => (err ? reject(err) : resolve()));
      });
      if (Object.keys(os.networkInterfaces()).length === 0) throw new Error('no interfaces');
      crypto.randomBytes(16);
      await fs.promises.readFile('/etc/hostname');
      await new Promise((resolve, reject) => {
        const worker = new Worker('require("worker_threads").parentPort.postMessage(1)', { eval: true });
        worker.on('message', resolve);
        worker.on('error', reject);
      });
      server.close();
      console.log('ok');
    });
  });
});
"#;

/// The interpreter's real executable (resolving shims such as pyenv's), if it runs at all.
fn find(program: &str, print_executable: &[&str]) -> Option<PathBuf> {
    let output = Command::new(program).args(print_executable).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let path = String::from_utf8(output.stdout).ok()?;
    Some(PathBuf::from(path.trim()))
}

/// Runs `program args...` under `profile`; returns (exit code, stdout, stderr).
fn run_filtered(
    profile: &str,
    program: PathBuf,
    args: Vec<String>,
) -> (Option<i32>, String, String) {
    let seccomp = sandbox_profiles::seccomp_variant(profile).unwrap().to_oci();
    common::in_child(Some(&seccomp), move || {
        match Command::new(&program).args(&args).output() {
            Ok(out) => (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ),
            Err(err) => (
                None,
                String::new(),
                format!("spawn {}: {err}", program.display()),
            ),
        }
    })
    .expect("child report")
}

#[test]
fn python_and_node_servers_run_under_the_default_and_strict_profiles() {
    let require = std::env::var_os("THV_SANDBOX_REQUIRE_INTERPRETERS").is_some()
        || std::env::var("CI").is_ok_and(|v| v == "true");
    let cases = [
        (
            "python3",
            find("python3", &["-c", "import sys; print(sys.executable)"]),
            vec!["-c".to_owned(), PYTHON_SERVER.to_owned()],
        ),
        (
            "node",
            find("node", &["-e", "console.log(process.execPath)"]),
            vec!["-e".to_owned(), NODE_SERVER.to_owned()],
        ),
    ];
    let mut ran = 0;
    for (name, path, args) in cases {
        let Some(path) = path else {
            assert!(!require, "{name} is required but not found");
            eprintln!("skipping {name}: not installed");
            continue;
        };
        // The default profile, and the strict variant, which must not break ordinary servers.
        for profile in ["default", "strict"] {
            let (code, stdout, stderr) = run_filtered(profile, path.clone(), args.clone());
            assert_eq!(
                (code, stdout.trim()),
                (Some(0), "ok"),
                "{name} ({}) failed under the {profile} profile\nstdout:\n{stdout}\nstderr:\n{stderr}",
                path.display()
            );
        }
        ran += 1;
    }
    eprintln!("{ran} interpreter(s) checked");
}
