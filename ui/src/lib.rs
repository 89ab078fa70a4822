//! The interface crate as a library: the command line (`cli`), the terminal interface (`tui`)
//! and the backends that connect the interface to the engine (`backends`). The `privxray`
//! binary (main.rs) only sets the allocator and calls `cli::run`; the integration tests drive
//! the interface through this library instead of compiling its sources again.
//!
//! Imports only its children; the crate imports the engine (`privxray`), and the engine never
//! imports it.

pub mod backends;
pub mod cli;
pub mod tui;
