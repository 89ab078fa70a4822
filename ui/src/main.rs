//! The `privxray` binary: the terminal interface with no subcommand, headless subcommands
//! otherwise. Errors reach the user as one clear message on stderr and a non-zero exit.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(err) = cli::run(args) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
