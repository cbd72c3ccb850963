//! Writes the probe image (an OCI layout) for benchmarks and manual runs:
//! `make-probe-image DIR [TAG] [USER]` (the sandbox-probe binary must be built next to this one).

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: make-probe-image DIR [TAG] [USER]");
        return std::process::ExitCode::from(2);
    };
    let tag = args.next().unwrap_or_else(|| "latest".into());
    let user = args.next();
    match thv_sandbox_e2e::probe_image(std::path::Path::new(&dir), &tag, user.as_deref()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
