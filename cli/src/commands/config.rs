//! `thv-sandbox config path|show`.

use std::path::PathBuf;

use thv_sandbox_runtime::dirs::Dirs;
use thv_sandbox_runtime::settings::{self};
use thv_sandbox_runtime::EXIT_USAGE;

use crate::args::*;
use crate::commands::load_config;
use crate::report::*;

pub(crate) fn config_cmd(file: Option<PathBuf>, cmd: ConfigCommand) -> i32 {
    use std::io::Write;
    let (settings, json) = match &cmd {
        ConfigCommand::Path => (SettingsArgs::default(), false),
        ConfigCommand::Show(s) => (s.settings.clone(), s.json),
    };
    if let ConfigCommand::Path = cmd {
        // Only where the file is: a malformed file must not stop anyone from finding it.
        let located = settings::locate(file.as_deref(), &|name| std::env::var(name).ok());
        return match located {
            Ok((path, _)) => {
                let _ = writeln!(std::io::stdout(), "{}", path.display());
                if !path.exists() {
                    eprintln!("(the file does not exist; every setting has its default)");
                }
                0
            }
            Err(e) => report_error(&e, &[], e.hint(), EXIT_USAGE),
        };
    }
    let config = match load_config(file, &settings) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let effective_cache = Dirs::from_env(config.cache_dir.value.clone())
        .ok()
        .map(|d| d.cache);
    let out = match json {
        true => {
            let mut s = serde_json::to_string_pretty(&config.to_json(effective_cache.as_deref()))
                .unwrap_or_default();
            s.push('\n');
            s
        }
        false => config.render(effective_cache.as_deref()),
    };
    let _ = std::io::stdout().write_all(out.as_bytes());
    0
}
