//! `stickyd --generate KIND`: the man page and the shell completions, generated from the clap
//! definitions of [`Cli`] so that they name exactly the flags the binary takes.

use clap::{CommandFactory, ValueEnum};
use clap_complete::Shell;

use super::Cli;

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generate {
    /// The man page, in roff
    Man,
    /// The bash completion script
    CompleteBash,
    /// The zsh completion script (the _stickyd function file)
    CompleteZsh,
    /// The fish completion script
    CompleteFish,
}

/// The program name the man page and the completions are for.
const BIN: &str = "stickyd";

/// The text `--generate kind` prints.
pub fn generate(kind: Generate) -> String {
    let mut out = Vec::new();
    let shell = match kind {
        Generate::Man => return man_page(),
        Generate::CompleteBash => Shell::Bash,
        Generate::CompleteZsh => Shell::Zsh,
        Generate::CompleteFish => Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The man page: clap's sections (name, synopsis, description, options, version), with the
/// keys, exit status, signals, environment and examples that a reader of `man stickyd` looks
/// for before the version.
fn man_page() -> String {
    let cmd = Cli::command().about("a sticky-session connection dispatcher for Linux");
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .manual("stickyd manual")
        .render(&mut out)
        // Writing to a Vec does not fail.
        .expect("render the man page into memory");
    let mut page = String::from_utf8_lossy(&out).into_owned();
    let at = page.find("\n.SH VERSION").map_or(page.len(), |i| i + 1);
    page.insert_str(at, MAN_EXTRA);
    page
}

/// The man page's sections beyond the flags, in roff.
const MAN_EXTRA: &str = r#".SH "KEYS"
Rules for \fB\-\-key\fR and \fB\-\-fallback\fR: \fBip\fR (the client address, or the address a
PROXY header carries with \fB\-\-proxy\-protocol\fR), \fBheader:\fINAME\fR (matched
case\-insensitively; \fBheader:x\-forwarded\-for\fR takes the leftmost element, or with
\fB\-\-trust\fR the rightmost one not in a trusted network), \fBcookie:\fINAME\fR,
\fBquery:\fINAME\fR, \fBsni\fR (the TLS server name). The rules are tried in order and the first
that yields a key wins. Only \fBip\fR without \fB\-\-proxy\-protocol\fR routes at accept time,
without peeking.
.PP
Durations are an integer and a unit: \fB250ms\fR, \fB5s\fR, \fB1m\fR. Sizes are bytes, or
\fB16KiB\fR, \fB1MiB\fR.
.SH "EXIT STATUS"
.TP
\fB0\fR
A shutdown that was asked for (SIGTERM, SIGINT), also when workers had to be killed; or
\fB\-\-check\fR, \fB\-\-generate\fR, \fB\-\-help\fR or \fB\-\-version\fR done.
.TP
\fB1\fR
A fatal runtime error, with a message.
.TP
\fB2\fR
A bad command line or configuration file, with one line naming what is wrong
(\fIfile\fB:\fIline\fB:\fR for the configuration file).
.SH "SIGNALS"
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop accepting and close the listeners, route the connections already accepted, drain every
worker, wait up to \fB\-\-grace\fR, then SIGTERM and 2 seconds later SIGKILL what is left, and
exit 0. A second signal kills the workers at once.
.TP
\fBSIGUSR2\fR
A zero\-downtime upgrade: the executable at the path stickyd was started from takes over the
listeners and starts its workers; then the old master drains and exits. It cannot work where
stickyd is PID 1, as in a bare container: its exit ends the container.
.SH "ENVIRONMENT"
.TP
\fBRUST_LOG\fR
The log level of the lines written to standard error (\fBerror\fR, \fBwarn\fR, \fBinfo\fR, the
default, \fBdebug\fR).
.TP
\fBLISTEN_FDS\fR, \fBLISTEN_PID\fR
systemd socket activation: the listeners are the sockets passed.
.TP
\fBNOTIFY_SOCKET\fR
systemd readiness notification (\fBType=notify\fR).
.PP
Workers find their slot in \fBSTICKYD_WORKER_ID\fR (0\-based) and their channel in
\fBSTICKYD_FD\fR, or \fBSTICKYD_ATTACH\fR for a worker that attaches to \fB\-\-attach\fR.
.SH "EXAMPLES"
.TP
\fBstickyd \-\-workers 4 \-\- ./my\-worker\fR
Four workers, routed by client address.
.TP
\fBstickyd \-\-key header:x\-forwarded\-for \-\-trust 10.0.0.0/8 \-\- ./my\-worker\fR
Behind proxies in 10.0.0.0/8.
.TP
\fBstickyd \-\-check \-\-config /etc/stickyd.toml\fR
Validate a configuration before a reload.
.SH "SEE ALSO"
The documentation in the \fBdocs/\fR folder of stickyd's source: the command line, the
configuration file, the wire protocol, the metrics and every log line.
"#;
