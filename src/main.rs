//! The `stickyd` binary: parse the command line, then run the dispatcher, or, when started as
//! its own built-in worker, the hello worker.

use std::process::ExitCode;

use stickyd::cli;
use stickyd::{Dispatcher, logging};

fn main() -> ExitCode {
    if let Some(code) = stickyd::builtin_worker() {
        return code;
    }
    let config = match cli::from_process_args() {
        Ok(config) => config,
        Err(code) => return code,
    };
    logging::init("stickyd");
    match Dispatcher::new(config).run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not through the logger: a fatal error is printed whatever RUST_LOG says.
            eprintln!("stickyd: error: {e}");
            ExitCode::FAILURE
        }
    }
}
