//! A dispatcher with a custom key: routes `/rooms/<room>/...` by the room, so every member of a
//! room reaches the worker that holds it, whatever their address; other paths fall back to the
//! client address. It takes the same command line as `stickyd`.
//!
//! ```sh
//! cargo run --example path_token -- --listen 127.0.0.1:3000 --workers 4
//! curl 127.0.0.1:3000/rooms/blue/messages    # always the same worker for "blue"
//! ```

use std::process::ExitCode;

use stickyd::cli;
use stickyd::decide::KeyPlan;
use stickyd::keys::{Key, KeyRule, key_fn};
use stickyd::{Dispatcher, logging};

fn main() -> ExitCode {
    // Without a worker command, the workers are this executable in worker mode.
    if let Some(code) = stickyd::builtin_worker() {
        return code;
    }
    let mut config = match cli::from_process_args() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let room = key_fn(|request| {
        let rest = request.path().strip_prefix(b"/rooms/")?;
        let room = rest.split(|&b| b == b'/').next()?;
        (!room.is_empty()).then_some(Key::Bytes(room))
    });
    let trust = config.plan.trust().clone();
    config.plan = KeyPlan::new(vec![room], KeyRule::Ip).with_trust(trust);
    logging::init("path_token");
    match Dispatcher::new(config).run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("path_token: error: {e}");
            ExitCode::FAILURE
        }
    }
}
