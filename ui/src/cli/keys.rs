//! `keygen`: a Noise static key for a party, the model owner or a client.
//!
//! Imports the engine's `net` (keys) only; no sibling, never `tui` or `backends`.

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where the private key goes (mode 0600, written atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing key file (atomically). Without it an existing file is never
    /// replaced, even by another keygen running at the same moment.
    #[arg(long)]
    pub force: bool,
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    // A mistyped directory is refused, not created: the key would land where nobody looks.
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            anyhow::bail!(
                "--out {}: the directory {} does not exist; create it first",
                args.out.display(),
                dir.display()
            );
        }
    }
    let public = privxray::net::keys::keygen(&args.out, args.force)?;
    // stdout carries only the public key, so scripts can paste it into parties.toml.
    println!("{public}");
    eprintln!("wrote private key {} (mode 0600)", args.out.display());
    Ok(())
}
