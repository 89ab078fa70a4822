//! The terminal interface from the command line: `privxray` with no subcommand on a terminal,
//! and `privxray demo`.
//!
//! The one `cli` file that imports `tui` and `backends`; of its siblings, `super::{data,
//! stderr_log}` only.

use crate::backends::{engine_backends, Folders};
use crate::tui;
use std::io::IsTerminal;
use std::path::Path;

/// Opens the interface on the real engine; `demo` starts the guided tour.
pub fn open(demo: bool) -> anyhow::Result<()> {
    let mut options = tui::TuiOptions::new(
        super::data::bundled_samples(),
        engine_backends(Folders::default()),
    );
    options.demo = demo;
    if !std::io::stdout().is_terminal() {
        // Let the interface say why, on the real stderr.
        return tui::run(options);
    }
    // Without a writable log file the interface still runs; library notes may then show.
    let _stderr = super::stderr_log::StderrToFile::new(Path::new(LOG_FILE)).ok();
    tui::run(options)
}

/// Where stderr goes while the interface is on screen.
pub const LOG_FILE: &str = "data/privxray-tui.log";

/// `privxray` alone: the interface on a terminal, the headless data walk-through otherwise.
pub fn default_entry() -> anyhow::Result<()> {
    if std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
        return open(false);
    }
    println!(
        "privxray: the interactive interface needs a terminal (stdin and stdout); \
         running the headless data walk-through instead (see privxray --help)"
    );
    super::data::default_job()
}
