//! Logs: stderr, one line per event, `RUST_LOG`-style levels (default `info`).

use std::io::Write;

use log::Level;

/// Installs the logger; `name` prefixes every line (`stickyd: ...`).
pub fn init(name: &'static str) {
    let env = env_logger::Env::default().default_filter_or("info");
    env_logger::Builder::from_env(env)
        .format(move |buf, record| match record.level() {
            Level::Info => writeln!(buf, "{name}: {}", record.args()),
            level => writeln!(
                buf,
                "{name}: {}: {}",
                level.as_str().to_ascii_lowercase(),
                record.args()
            ),
        })
        .init();
}
