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

/// Writes one line to stderr in a single `write`, like the logger's lines. `eprintln!` writes
/// each piece of its format on its own, so its line could be cut by another process's on the
/// same pipe (an upgrade's two masters share their stderr).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut line = args.to_string();
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `eprintln!` in one `write` (see [`line()`]): for the lines stickyd prints whatever the log
/// level, such as the addresses it listens on.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::logging::line(format_args!($($arg)*))
    };
}
pub(crate) use say;
