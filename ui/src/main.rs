//! The `privxray` binary: the terminal interface with no subcommand, headless subcommands
//! otherwise. Errors reach the user as one clear message on stderr and a non-zero exit.
//!
//! Imports `privxray_ui::cli` and the engine's `report` only.

use clap::Parser;
use privxray_ui::cli;

// candle allocates and frees large tensors every step; glibc's malloc returns them to the kernel
// and pays for zeroed pages again each time (35-40% of CPU time measured), mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its position in the C enum of the vendored mimalloc v3
/// (libmimalloc-sys names no constant for it). The test below pins it by its default value.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// Keep freed memory mapped instead of returning it to the kernel (by default a second later). Private inference
/// frees and reallocates buffers of tens of megabytes every protocol round; with purging on,
/// every reuse faulted in freshly zeroed pages (23-32% of CPU time, `perf record` on
/// `privxray bench mpc`) and batch-1 inference took 1.9x as long. The cost: a process keeps the
/// peak of what it used (a party serving batch 16: about 3.7 GB).
fn keep_freed_memory() {
    // SAFETY: sets one integer option of the allocator; no pointers are involved.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn main() {
    keep_freed_memory();
    let args = cli::Cli::parse();
    if let Err(err) = cli::run(args) {
        // Each cause once, though many error types also print their cause in their message.
        eprintln!("error: {}", privxray::report::said_once(err.as_ref()));
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_we_mean() {
        // 1000 ms is mimalloc v3's default purge delay and no neighbouring option's: if a new
        // version moves the enum, this fails instead of silently setting another option.
        // (MIMALLOC_PURGE_DELAY or its old name in the environment would change the default.)
        for var in ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"] {
            if std::env::var_os(var).is_some() {
                eprintln!("skipped: {var} is set");
                return;
            }
        }
        let got = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(got, 1000);
        super::keep_freed_memory();
        let got = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(got, -1);
    }
}
