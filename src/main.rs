//! The `stickyd` binary: parse the command line, then run the dispatcher, or, when started as
//! its own built-in worker, the hello worker.

use std::process::ExitCode;

use stickyd::cli::{self, Parsed};
use stickyd::{BUILTIN_WORKER_ENV, Dispatcher, logging};

/// The built-in worker is the SDK's example worker, compiled into this binary.
#[path = "../worker-sdk/examples/hello_worker.rs"]
#[allow(dead_code)]
mod hello_worker;

fn main() -> ExitCode {
    if std::env::var_os(BUILTIN_WORKER_ENV).is_some() {
        return hello_worker::run();
    }
    let config = match cli::parse(std::env::args_os()) {
        Parsed::Run(config) => config,
        Parsed::Print(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Parsed::Bad(line) => {
            eprintln!("{line}");
            return ExitCode::from(2);
        }
    };
    logging::init("stickyd");
    match Dispatcher::new(*config).run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not through the logger: a fatal error is printed whatever RUST_LOG says.
            eprintln!("stickyd: error: {e}");
            ExitCode::FAILURE
        }
    }
}
