//! The docs cannot rot: the README and the book in `docs/` are checked against the code.
//!
//! What is checked, each failure naming `file:line`:
//! - every relative link points at an existing file, and a `#fragment` at a heading of the
//!   Markdown file it names (GitHub's and mdBook's heading ids); `docs/src/SUMMARY.md` lists
//!   every chapter under `docs/src/` and nothing that is missing; `docs/book.toml` reads;
//! - every repository path written as inline code or as a word of a shell command
//!   (`src/...`, `tests/...`, `examples/...`, ...) exists;
//! - every `stickyd ...` command line in a ```sh block (and `cargo run` of stickyd or of the
//!   examples that take its command line, and an `ExecStart=` of stickyd in an ```ini block)
//!   passes `stickyd --check`: the real binary parses every flag and validates every value.
//!   `--check` binds nothing and starts nothing (checked here too). The worker program after
//!   `--` is replaced by `true`, since the check requires it to exist on this machine and the
//!   docs' programs (`./my-worker`, `node app.js`) are the reader's; its arguments stay.
//!   `--config PATH` takes the file a ```toml block of the same page names in its first line
//!   (`# /etc/stickyd.toml`), or the one an earlier `cp SRC PATH` of the page copied, or PATH
//!   in the repository;
//! - every ```toml block is a stickyd configuration that passes `stickyd --check --config`
//!   (with `-- true` when it names a `worker-command`), except Cargo manifests, which must
//!   parse as TOML;
//! - blocks marked `<!-- docs-test: copy of PATH -->` equal that file, `excerpt of PATH` are
//!   lines of that file in order, `stdout of stickyd ARGS` equal what that command prints, and
//!   `log` blocks hold only lines stickyd can log; the systemd units among the copies pass
//!   `systemd-analyze verify` (with stickyd's path pointed at the built binary), where it is
//!   installed;
//! - `curl` commands to the docs' local addresses (`127.0.0.1:3000`, the metrics at
//!   `127.0.0.1:9100`) run against a real stickyd with its built-in worker; `haproxy` command
//!   lines run with `-c`, where HAProxy is installed; ```js blocks pass `node --check`, where
//!   Node is installed; `cp` sources exist; ```json blocks parse; the stickyd command line of a
//!   ```dockerfile block (its `ENTRYPOINT` and `CMD`) passes `stickyd --check`;
//! - the flag table and the synopsis of `docs/src/running.md` name exactly the flags of
//!   `stickyd --help`; the metrics table of `docs/src/metrics.md` names exactly the metric
//!   families stickyd exports; every `error!`, `warn!` and `info!` line in `src/` has an
//!   entry in `docs/src/troubleshooting.md`, and every entry there is a line stickyd logs;
//! - the README's two first commands are `cargo run --release` and the test command that
//!   `.ci/run` runs (less `--locked`), and the getting-started chapter repeats them.
//!
//! What is not run, and why, is the table [`NOT_RUN`]: commands that build or run the whole
//! workspace, change the machine, run for minutes, or run programs of the reader's. ```rust
//! blocks are not compiled (the SDK's and the library's doctests and examples are); command
//! lines quoted inline in the prose, and the figures and claims of the prose, are read by
//! people.

mod util;

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use util::{Stickyd, TempDir, stickyd_bin};

/// Programs the docs name that this test does not run, and why.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "cargo",
        "builds or runs the workspace (tests, benches, examples): CI runs the test command \
         itself, and this test checks that the README's is the one CI runs",
    ),
    ("systemctl", "changes this machine's services"),
    ("kill", "signals a running stickyd"),
    ("journalctl", "reads this machine's journal"),
    (
        "scripts/soak.sh",
        "runs for minutes under load; not run by CI (docs/src/hacking.md)",
    ),
    (
        "scripts/fuzz.sh",
        "runs for minutes per target; not run by CI (docs/src/hacking.md)",
    ),
    (
        "benches/e2e/run.sh",
        "a benchmark that installs its peers and runs for minutes",
    ),
    ("wrk", "load generation, part of the benchmarks"),
    ("perf", "profiling, part of the benchmarks"),
    ("mdbook", "optional: renders the book"),
    (
        "docker",
        "builds or runs a container image, which needs a Docker daemon (the Dockerfile's \
         stickyd command line is checked from its copy in the book)",
    ),
    ("sleep", "part of a shell loop"),
    ("true", "a shell loop's condition"),
];

/// Examples that take `stickyd`'s command line (`cli::from_process_args`).
const EXAMPLES_WITH_STICKYD_ARGS: &[&str] = &["in_process", "path_token"];

/// Folders of the repository: an inline code span or a command word starting with one of
/// these is a path that must exist.
const REPO_DIRS: &[&str] = &[
    "src/",
    "tests/",
    "examples/",
    "worker-sdk/",
    "benches/",
    "contrib/",
    "scripts/",
    "fuzz/",
    "ring/",
    "docs/",
    ".ci/",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---- reading Markdown ------------------------------------------------------------------------

/// One Markdown file, split into prose and fenced code blocks.
struct Doc {
    /// Relative to the repository root, for messages.
    rel: String,
    path: PathBuf,
    /// Lines outside code blocks: (1-based line number, text).
    prose: Vec<(usize, String)>,
    blocks: Vec<Block>,
}

/// A fenced code block.
struct Block {
    /// The line of the opening fence.
    line: usize,
    /// The info string's first word (`sh`, `toml`, ...), empty when none.
    lang: String,
    /// The lines inside, with the fence's indentation removed: (line number, text).
    body: Vec<(usize, String)>,
    /// What a `<!-- docs-test: ... -->` comment just before the fence says.
    marker: Option<String>,
}

impl Block {
    fn text(&self) -> String {
        let mut out = String::new();
        for (_, l) in &self.body {
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

impl Doc {
    fn read(path: &Path) -> Doc {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let rel = path
            .strip_prefix(root())
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let mut prose = Vec::new();
        let mut blocks: Vec<Block> = Vec::new();
        let mut open: Option<(Block, String, usize)> = None; // block, fence, indent
        let mut last_prose: Option<String> = None;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if let Some((mut block, fence, fence_indent)) = open.take() {
                if trimmed.starts_with(&fence) && trimmed.trim_end().chars().all(|c| c == '`') {
                    blocks.push(block);
                    last_prose = None;
                } else {
                    let body = if line.len() >= fence_indent
                        && line[..fence_indent].chars().all(|c| c == ' ')
                    {
                        &line[fence_indent..]
                    } else {
                        trimmed
                    };
                    block.body.push((n, body.to_owned()));
                    open = Some((block, fence, fence_indent));
                }
                continue;
            }
            if let Some(info) = trimmed.strip_prefix("```") {
                let fence =
                    "```".to_owned() + &"`".repeat(info.len() - info.trim_start_matches('`').len());
                let info = info.trim_start_matches('`');
                let marker = last_prose.as_deref().and_then(|l| {
                    l.trim()
                        .strip_prefix("<!-- docs-test:")
                        .and_then(|m| m.strip_suffix("-->"))
                        .map(|m| m.trim().to_owned())
                });
                let lang = info
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .next()
                    .unwrap_or("")
                    .to_owned();
                open = Some((
                    Block {
                        line: n,
                        lang,
                        body: Vec::new(),
                        marker,
                    },
                    fence,
                    indent,
                ));
                continue;
            }
            prose.push((n, line.to_owned()));
            if !line.trim().is_empty() {
                last_prose = Some(line.to_owned());
            }
        }
        assert!(open.is_none(), "{rel}: a code block is not closed");
        Doc {
            rel,
            path: path.to_owned(),
            prose,
            blocks,
        }
    }

    fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.rel)
    }

    /// The heading ids of this file, as GitHub and mdBook make them.
    fn anchors(&self) -> BTreeSet<String> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut out = BTreeSet::new();
        for (_, line) in &self.prose {
            let Some(title) = heading(line) else { continue };
            let id = slug(title);
            let count = seen.entry(id.clone()).or_insert(0);
            if *count == 0 {
                out.insert(id);
            } else {
                out.insert(format!("{id}-{count}"));
            }
            *count += 1;
        }
        out
    }

    /// Inline code spans of the prose: (line, text, whether the line is a table row).
    fn code_spans(&self) -> Vec<(usize, String, bool)> {
        let mut out = Vec::new();
        let mut para: Vec<(usize, &str)> = Vec::new();
        let flush = |para: &mut Vec<(usize, &str)>, out: &mut Vec<(usize, String, bool)>| {
            spans_of(para, out);
            para.clear();
        };
        for (n, line) in &self.prose {
            if line.trim().is_empty() || line.trim_start().starts_with('|') {
                flush(&mut para, &mut out);
                if line.trim_start().starts_with('|') {
                    let row = [(*n, line.as_str())];
                    let mut spans = Vec::new();
                    spans_of(&row, &mut spans);
                    out.extend(spans.into_iter().map(|(n, s, _)| (n, s, true)));
                }
                continue;
            }
            para.push((*n, line));
        }
        flush(&mut para, &mut out);
        out
    }
}

/// The code spans of one paragraph (lines joined; a span may cross a line break).
fn spans_of(para: &[(usize, &str)], out: &mut Vec<(usize, String, bool)>) {
    let mut text = String::new();
    let mut starts = Vec::new(); // byte offset in `text` where each line starts
    for (n, l) in para {
        starts.push((text.len(), *n));
        text.push_str(l);
        text.push('\n');
    }
    let line_of = |at: usize| {
        starts
            .iter()
            .rev()
            .find(|(s, _)| *s <= at)
            .map_or(0, |(_, n)| *n)
    };
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let run = bytes[i..].iter().take_while(|&&b| b == b'`').count();
        let start = i + run;
        let mut j = start;
        let mut end = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let r = bytes[j..].iter().take_while(|&&b| b == b'`').count();
                if r == run {
                    end = Some(j);
                    break;
                }
                j += r;
            } else {
                j += 1;
            }
        }
        let Some(end) = end else {
            i = start;
            continue;
        };
        let raw = &text[start..end];
        let mut content = String::new();
        for (k, piece) in raw.split('\n').enumerate() {
            if k > 0 {
                content.push(' ');
                content.push_str(piece.trim_start());
            } else {
                content.push_str(piece);
            }
        }
        let content = if content.len() >= 2 && content.starts_with(' ') && content.ends_with(' ') {
            content[1..content.len() - 1].to_owned()
        } else {
            content
        };
        out.push((line_of(i), content, false));
        i = end + run;
    }
}

fn heading(line: &str) -> Option<&str> {
    let hashes = line.chars().take_while(|&c| c == '#').count();
    if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
        Some(line[hashes..].trim())
    } else {
        None
    }
}

/// A heading's id: lower case, spaces to `-`, every character but letters, digits, `-` and `_`
/// dropped (GitHub's rule, and mdBook's).
fn slug(title: &str) -> String {
    title
        .to_lowercase()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                Some(c)
            } else if c == ' ' {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The README and every Markdown file under `docs/src/`.
fn docs() -> Vec<Doc> {
    let mut paths = vec![root().join("README.md")];
    paths.extend(
        book_chapters_on_disk()
            .into_iter()
            .map(|p| root().join("docs/src").join(p)),
    );
    paths.push(root().join("docs/src/SUMMARY.md"));
    paths.iter().map(|p| Doc::read(p)).collect()
}

/// Every `.md` file under `docs/src/` but `SUMMARY.md`, relative to `docs/src/`.
fn book_chapters_on_disk() -> BTreeSet<String> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("read docs/src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                let rel = path
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if rel != "SUMMARY.md" {
                    out.insert(rel);
                }
            }
        }
    }
    let base = root().join("docs/src");
    let mut out = BTreeSet::new();
    walk(&base, &base, &mut out);
    out
}

/// The relative link targets of a prose line, outside inline code.
fn links(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    let mut offset = 0;
    while let Some(at) = rest.find("](") {
        let abs = offset + at;
        let ticks = line[..abs].matches('`').count();
        let tail = &rest[at + 2..];
        let end = tail.find(')').unwrap_or(tail.len());
        if ticks % 2 == 0 {
            let target = tail[..end]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned();
            out.push(target);
        }
        offset = abs + 2 + end;
        rest = &line[offset.min(line.len())..];
    }
    out
}

fn fail(errors: &[String]) {
    assert!(
        errors.is_empty(),
        "{} problem(s) in the docs:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

// ---- links and the summary --------------------------------------------------------------------

#[test]
fn links_and_anchors_resolve() {
    let docs = docs();
    let mut anchors: HashMap<PathBuf, BTreeSet<String>> = HashMap::new();
    for doc in &docs {
        anchors.insert(doc.path.canonicalize().unwrap(), doc.anchors());
    }
    let mut errors = Vec::new();
    let mut count = 0;
    for doc in &docs {
        for (n, line) in &doc.prose {
            for target in links(line) {
                if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                    continue;
                }
                count += 1;
                let (path, fragment) = match target.split_once('#') {
                    Some((p, f)) => (p, Some(f)),
                    None => (target.as_str(), None),
                };
                let file = if path.is_empty() {
                    doc.path.clone()
                } else {
                    doc.path.parent().unwrap().join(path)
                };
                let Ok(file) = file.canonicalize() else {
                    errors.push(format!("{}: link `{target}`: no such file", doc.at(*n)));
                    continue;
                };
                if let Some(fragment) = fragment {
                    let ids = anchors.get(&file).cloned().unwrap_or_else(|| {
                        if file.extension().is_some_and(|e| e == "md") {
                            Doc::read(&file).anchors()
                        } else {
                            BTreeSet::new()
                        }
                    });
                    if !ids.contains(fragment) {
                        errors.push(format!(
                            "{}: link `{target}`: no heading with the id `{fragment}` in {}",
                            doc.at(*n),
                            file.strip_prefix(root()).unwrap_or(&file).display()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        count > 50,
        "only {count} links found: is the link reader broken?"
    );
    fail(&errors);
}

#[test]
fn the_summary_lists_every_chapter_and_the_book_reads() {
    let summary = Doc::read(&root().join("docs/src/SUMMARY.md"));
    let mut listed = BTreeSet::new();
    let mut errors = Vec::new();
    for (n, line) in &summary.prose {
        for target in links(line) {
            if !root().join("docs/src").join(&target).is_file() {
                errors.push(format!("{}: `{target}` does not exist", summary.at(*n)));
            }
            if !listed.insert(target.clone()) {
                errors.push(format!("{}: `{target}` is listed twice", summary.at(*n)));
            }
        }
    }
    for chapter in book_chapters_on_disk() {
        if !listed.contains(&chapter) {
            errors.push(format!(
                "docs/src/{chapter}: not listed in docs/src/SUMMARY.md (mdBook would not build it)"
            ));
        }
    }
    let book = std::fs::read_to_string(root().join("docs/book.toml")).expect("docs/book.toml");
    match toml::from_str::<toml::Table>(&book) {
        Ok(table) => {
            let src = table
                .get("book")
                .and_then(|b| b.get("src"))
                .and_then(|s| s.as_str())
                .unwrap_or("src");
            if src != "src" {
                errors.push(format!("docs/book.toml: [book] src is `{src}`, not `src`"));
            }
        }
        Err(e) => errors.push(format!("docs/book.toml: not TOML: {e}")),
    }
    fail(&errors);
}

/// A word that names a file or folder of the repository (`contrib/stickyd.toml`).
fn repo_path(word: &str) -> Option<&str> {
    let word = word.trim_end_matches([',', '.', ':', ';', ')']);
    let plain = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
    (plain && REPO_DIRS.iter().any(|d| word.starts_with(d))).then_some(word)
}

#[test]
fn paths_named_in_the_docs_exist() {
    let mut errors = Vec::new();
    for doc in docs() {
        for (n, span, _) in doc.code_spans() {
            if let Some(path) = repo_path(&span) {
                if !root().join(path).exists() {
                    errors.push(format!("{}: `{path}` does not exist", doc.at(n)));
                }
            }
        }
        for block in doc.blocks.iter().filter(|b| is_shell(&b.lang)) {
            for (n, line) in shell_lines(block) {
                let Ok(commands) = split_commands(&line) else {
                    continue;
                };
                for word in commands.iter().flatten() {
                    if let Some(path) = repo_path(word) {
                        if !root().join(path).exists() {
                            errors.push(format!("{}: `{path}` does not exist", doc.at(n)));
                        }
                    }
                }
            }
        }
    }
    fail(&errors);
}

// ---- shell command lines ----------------------------------------------------------------------

fn is_shell(lang: &str) -> bool {
    matches!(lang, "sh" | "bash" | "shell" | "console")
}

/// The command lines of a shell block: (line, text), continuation lines joined; in a
/// `console` block only the lines after a `$ ` prompt.
fn shell_lines(block: &Block) -> Vec<(usize, String)> {
    let console = block.lang == "console";
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, raw) in &block.body {
        let line = if let Some((start, mut text)) = pending.take() {
            text.push(' ');
            text.push_str(raw.trim_start());
            (start, text)
        } else if console {
            match raw.strip_prefix("$ ") {
                Some(cmd) => (*n, cmd.to_owned()),
                None => continue,
            }
        } else {
            (*n, raw.clone())
        };
        if let Some(stripped) = line.1.strip_suffix('\\') {
            pending = Some((line.0, stripped.trim_end().to_owned()));
        } else if !line.1.trim().is_empty() {
            out.push(line);
        }
    }
    if let Some(line) = pending {
        out.push(line);
    }
    out
}

/// Splits a shell line into simple commands (words), as sh would: quotes, backslashes,
/// comments, and the operators `;`, `&`, `&&`, `|`, `||`. Redirections (`> FILE`, `>> FILE`,
/// `2>&1`, `< FILE`) are not words of the command: they and their targets are left out.
fn split_commands(line: &str) -> Result<Vec<Vec<String>>, String> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word: Option<String> = None;
    // The next word is a redirection's target.
    let mut target = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if target && word.is_some() && (c.is_whitespace() || matches!(c, ';' | '&' | '|')) {
            word = None; // the target ends here
            target = false;
        }
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("an unclosed ' quote".to_owned()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("an unclosed \" quote".to_owned()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("an unclosed \" quote".to_owned()),
                    }
                }
            }
            '\\' => {
                if let Some(c) = chars.next() {
                    word.get_or_insert_with(String::new).push(c);
                }
            }
            '#' if word.is_none() => break,
            '>' | '<' => {
                // `2>` names a descriptor, not a word.
                match word.take() {
                    Some(w) if !w.chars().all(|c| c.is_ascii_digit()) => words.push(w),
                    _ => {}
                }
                if matches!(chars.peek(), Some('>' | '&')) {
                    chars.next();
                }
                target = true;
            }
            ';' | '&' | '|' => {
                words.extend(word.take());
                if matches!(chars.peek(), Some(&n) if n == c && c != ';') {
                    chars.next();
                }
                if !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
            }
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if !target {
        words.extend(word);
    }
    if !words.is_empty() {
        commands.push(words);
    }
    Ok(commands)
}

/// A simple command with its shell keywords, `sudo` and variable assignments taken off.
struct SimpleCommand {
    env: Vec<(String, String)>,
    words: Vec<String>,
}

fn simple_command(mut words: Vec<String>) -> Option<SimpleCommand> {
    match words.first().map(String::as_str) {
        Some("for") | Some("done") | Some("fi") | None => return None,
        Some("do" | "then" | "else" | "while" | "until" | "if") => {
            words.remove(0);
        }
        _ => {}
    }
    let mut env = Vec::new();
    while let Some(first) = words.first() {
        let is_assignment = first.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        });
        if !is_assignment {
            break;
        }
        let (name, value) = first.split_once('=').unwrap();
        env.push((name.to_owned(), value.to_owned()));
        words.remove(0);
    }
    if words.first().is_some_and(|w| w == "sudo") {
        words.remove(0);
    }
    (!words.is_empty()).then_some(SimpleCommand { env, words })
}

/// Per page: the configuration files that paths such as `/etc/stickyd.toml` stand for.
struct Aliases {
    dir: PathBuf,
    files: HashMap<String, PathBuf>,
}

impl Aliases {
    fn resolve(&self, path: &str) -> Result<PathBuf, String> {
        if let Some(file) = self.files.get(path) {
            return Ok(file.clone());
        }
        if Path::new(path).starts_with(&self.dir) {
            return Ok(PathBuf::from(path)); // a block of the page, written out by the test
        }
        let in_repo = root().join(path);
        if !Path::new(path).is_absolute() && in_repo.is_file() {
            return Ok(in_repo);
        }
        Err(format!(
            "--config {path}: not a file of the repository, and no ```toml block of this page \
             names it in its first line (`# {path}`), nor does an earlier `cp` copy a file there"
        ))
    }
}

/// Runs `stickyd --check ARGS` (a doc's command line, its worker program replaced by `true`,
/// `--config` resolved) from the repository root.
fn check_stickyd(args: &[String], aliases: &Aliases) -> Result<(), String> {
    let mut argv: Vec<String> = Vec::new();
    if !args.iter().any(|a| a == "--check") {
        argv.push("--check".to_owned());
    }
    let mut names_worker = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            argv.push("--".to_owned());
            if iter.next().is_some() {
                argv.push("true".to_owned());
            }
            argv.extend(iter.by_ref().cloned());
            break;
        }
        let config = match arg.strip_prefix("--config=") {
            Some(path) => Some(path),
            None if arg == "--config" => {
                Some(iter.next().ok_or("--config without a file")?.as_str())
            }
            None => None,
        };
        match config {
            Some(path) => {
                let file = aliases.resolve(path)?;
                // The file's worker program is the reader's too: replaced like one after `--`.
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                names_worker |= text
                    .lines()
                    .any(|l| l.trim_start().starts_with("worker-command"));
                argv.push("--config".to_owned());
                argv.push(file.to_string_lossy().into_owned());
            }
            None => argv.push(arg.clone()),
        }
    }
    if names_worker && !argv.iter().any(|a| a == "--") {
        argv.extend(["--".to_owned(), "true".to_owned()]);
    }
    let out = Command::new(stickyd_bin())
        .args(&argv)
        .current_dir(root())
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run stickyd --check");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`stickyd {}` exits {:?}: {}",
            argv.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The args `cargo run ...` passes to the program, if that program takes stickyd's command
/// line: the `stickyd` binary itself, or an example in [`EXAMPLES_WITH_STICKYD_ARGS`].
fn cargo_run_args(words: &[String]) -> Option<Vec<String>> {
    if words.get(1).map(String::as_str) != Some("run") {
        return None;
    }
    let split = words.iter().position(|w| w == "--").unwrap_or(words.len());
    let cargo_args = &words[..split];
    let example = cargo_args
        .iter()
        .position(|w| w == "--example")
        .and_then(|i| cargo_args.get(i + 1));
    let bin = cargo_args
        .iter()
        .position(|w| w == "--bin")
        .and_then(|i| cargo_args.get(i + 1));
    let takes_stickyd_args = match (example, bin) {
        (Some(e), _) => EXAMPLES_WITH_STICKYD_ARGS.contains(&e.as_str()),
        (None, Some(b)) => b == "stickyd",
        (None, None) => !cargo_args.iter().any(|w| w == "-p" || w == "--package"),
    };
    takes_stickyd_args.then(|| words.get(split + 1..).unwrap_or_default().to_vec())
}

/// The arguments of the stickyd command a Dockerfile runs: its `ENTRYPOINT` (or, `FROM
/// stickyd`, the repository's `Dockerfile`'s) followed by its `CMD`, both in exec form.
fn dockerfile_command(text: &str) -> Result<Vec<String>, String> {
    fn exec_form(text: &str, instruction: &str) -> Result<Option<Vec<String>>, String> {
        let joined = text.replace("\\\n", " ");
        let Some(json) = joined.lines().rev().find_map(|l| {
            l.strip_prefix(instruction)
                .and_then(|rest| rest.strip_prefix(' '))
        }) else {
            return Ok(None);
        };
        serde_json::from_str(json.trim())
            .map(Some)
            .map_err(|e| format!("{instruction} {json}: not the exec form (a JSON array): {e}"))
    }
    let entrypoint = match exec_form(text, "ENTRYPOINT")? {
        Some(e) => e,
        None if text.lines().any(|l| l.trim() == "FROM stickyd") => {
            let ours = std::fs::read_to_string(root().join("Dockerfile"))
                .map_err(|e| format!("Dockerfile: {e}"))?;
            exec_form(&ours, "ENTRYPOINT")?.ok_or("Dockerfile: no ENTRYPOINT")?
        }
        None => return Err("a Dockerfile that runs no stickyd (no ENTRYPOINT)".to_owned()),
    };
    let mut argv = entrypoint;
    argv.extend(exec_form(text, "CMD")?.unwrap_or_default());
    match argv.split_first() {
        Some((program, args)) if program == "stickyd" || program.ends_with("/stickyd") => {
            Ok(args.to_vec())
        }
        _ => Err(format!("the Dockerfile runs {argv:?}, not stickyd")),
    }
}

/// A stickyd with its built-in worker, for the docs' `curl` commands.
struct Live {
    _stickyd: Stickyd,
    http: SocketAddr,
    metrics: SocketAddr,
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// What checking one page's code blocks found.
#[derive(Default)]
struct Report {
    errors: Vec<String>,
    checked: Vec<String>,
    skipped: Vec<String>,
}

struct Checker {
    live: Option<Live>,
    tmp: TempDir,
    /// The blocks written out as files: (file, the page's name, the line of its first line).
    temps: Vec<(PathBuf, String, usize)>,
}

impl Checker {
    /// Writes a block out for a program to read.
    fn temp_file(&mut self, name: &str, doc: &Doc, block: &Block) -> PathBuf {
        let path = self.tmp.0.join(format!("{}-{name}", self.temps.len() + 1));
        std::fs::write(&path, block.text()).expect("write a temp file");
        let first = block.body.first().map_or(block.line + 1, |(n, _)| *n);
        self.temps.push((path.clone(), doc.rel.clone(), first));
        path
    }

    /// `msg` with the files written from blocks named as the page's lines (`FILE:3:` becomes
    /// `docs/src/x.md:42:`).
    fn explain(&self, msg: &str) -> String {
        let mut msg = msg.to_owned();
        for (path, rel, first) in &self.temps {
            let path = path.display().to_string();
            while let Some(at) = msg.find(&format!("{path}:")) {
                let digits: String = msg[at + path.len() + 1..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                let replacement = match digits.parse::<usize>() {
                    Ok(n) => format!("{rel}:{}", first + n - 1),
                    Err(_) => format!("{rel}:{first}"),
                };
                msg.replace_range(at..at + path.len() + 1 + digits.len(), &replacement);
            }
            msg = msg.replace(&path, &format!("<the block at {rel}:{first}>"));
        }
        msg
    }

    fn live(&mut self) -> &Live {
        self.live.get_or_insert_with(|| {
            let s = Stickyd::start_ready(
                &[
                    "--listen",
                    "127.0.0.1:0",
                    "--workers",
                    "2",
                    "--metrics",
                    "127.0.0.1:0",
                ],
                2,
            );
            let http = s.addr();
            let metrics = s.metrics_addr();
            Live {
                _stickyd: s,
                http,
                metrics,
            }
        })
    }

    /// One simple command of a shell block (or an `ExecStart=`).
    fn command(&mut self, cmd: SimpleCommand, aliases: &mut Aliases, at: &str, r: &mut Report) {
        let program = cmd.words[0].as_str();
        let shown = cmd.words.join(" ");
        if program == "stickyd" || program.ends_with("/stickyd") {
            match check_stickyd(&cmd.words[1..], aliases) {
                Ok(()) => r.checked.push(format!("{at}: stickyd --check")),
                Err(e) => r.errors.push(format!("{at}: {}", self.explain(&e))),
            }
            return;
        }
        if program == "cargo" {
            if let Some(args) = cargo_run_args(&cmd.words) {
                match check_stickyd(&args, aliases) {
                    Ok(()) => r
                        .checked
                        .push(format!("{at}: `{shown}`: its args, stickyd --check")),
                    Err(e) => r
                        .errors
                        .push(format!("{at}: `{shown}`: {}", self.explain(&e))),
                }
                return;
            }
        }
        match program {
            "cp" => {
                let Some((dst, srcs)) = cmd.words[1..].split_last() else {
                    r.errors.push(format!("{at}: `{shown}`: cp of nothing"));
                    return;
                };
                for src in srcs {
                    if src.starts_with("target/") {
                        continue; // a build product
                    }
                    let file = root().join(src);
                    if !file.exists() {
                        r.errors
                            .push(format!("{at}: `{shown}`: {src} does not exist"));
                        continue;
                    }
                    let to = if dst.ends_with('/') || srcs.len() > 1 {
                        let name = Path::new(src).file_name().unwrap().to_string_lossy();
                        format!("{}/{name}", dst.trim_end_matches('/'))
                    } else {
                        dst.clone()
                    };
                    aliases.files.insert(to, file);
                }
                r.checked.push(format!("{at}: cp sources"));
            }
            "curl" => self.curl(&cmd, at, r),
            "haproxy" => {
                let Some(haproxy) = find_program("haproxy") else {
                    let missing = format!("{at}: `{shown}`: haproxy is not installed");
                    // CI installs it: there its absence is a failure, not a skip.
                    if std::env::var_os("STICKYD_REQUIRE_HAPROXY").is_some() {
                        r.errors.push(missing);
                    } else {
                        r.skipped.push(missing);
                    }
                    return;
                };
                let out = Command::new(haproxy)
                    .arg("-c")
                    .args(&cmd.words[1..])
                    .envs(cmd.env.iter().map(|(k, v)| (k, v)))
                    .current_dir(root())
                    .output()
                    .expect("run haproxy -c");
                if out.status.success() {
                    r.checked.push(format!("{at}: haproxy -c"));
                } else {
                    r.errors.push(format!(
                        "{at}: `{shown}`: haproxy -c exits {:?}: {}{}",
                        out.status.code(),
                        String::from_utf8_lossy(&out.stdout).trim(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            _ if program.starts_with("target/") => r.skipped.push(format!(
                "{at}: `{program}`: a build product, run by the integration tests"
            )),
            _ => match NOT_RUN.iter().find(|(p, _)| *p == program) {
                Some((_, why)) => r.skipped.push(format!("{at}: `{program}`: {why}")),
                None => r.errors.push(format!(
                    "{at}: `{shown}`: tests/docs.rs has no rule for `{program}`: check it, or add \
                     it to NOT_RUN with the reason"
                )),
            },
        }
    }

    /// `curl` to the docs' local addresses, against a real stickyd.
    fn curl(&mut self, cmd: &SimpleCommand, at: &str, r: &mut Report) {
        let shown = cmd.words.join(" ");
        let local = |w: &str| w.contains("127.0.0.1:3000") || w.contains("127.0.0.1:9100");
        if !cmd.words[1..].iter().any(|w| local(w)) {
            r.skipped
                .push(format!("{at}: `{shown}`: not a local address"));
            return;
        }
        let Some(curl) = find_program("curl") else {
            r.skipped
                .push(format!("{at}: `{shown}`: curl is not installed"));
            return;
        };
        let (http, metrics) = {
            let live = self.live();
            (live.http.to_string(), live.metrics.to_string())
        };
        let args: Vec<String> = cmd.words[1..]
            .iter()
            .map(|w| {
                w.replace("127.0.0.1:3000", &http)
                    .replace("127.0.0.1:9100", &metrics)
            })
            .collect();
        let out = Command::new(curl)
            .args(["-sS", "--max-time", "10"])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        let body = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            r.errors.push(format!(
                "{at}: `{shown}`: curl exits {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        } else if cmd.words.iter().any(|w| w.contains("127.0.0.1:3000"))
            && !body.contains("worker: ")
        {
            r.errors.push(format!(
                "{at}: `{shown}`: the built-in worker's answer has no `worker: N`: {body}"
            ));
        } else {
            r.checked.push(format!("{at}: curl"));
        }
    }
}

/// Every line stickyd can log: `error!`, `warn!` and `info!` in `src/`, and the lines it
/// prints itself (`stickyd: listening on ...`).
struct LogLine {
    at: String,
    /// The line as the operator sees it, its placeholders split out: literal pieces, with any
    /// text between two of them.
    pieces: Vec<String>,
    /// From a log macro (a troubleshooting entry is required), not a plain print.
    from_macro: bool,
    source: String,
}

impl LogLine {
    fn matches(&self, text: &str) -> bool {
        glob(&self.pieces, text)
    }
}

/// Whether `text` is `pieces` with any text (possibly none) between consecutive pieces.
fn glob(pieces: &[String], text: &str) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return text.is_empty();
    };
    let Some(mut text) = text.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return text.is_empty();
    };
    if text.len() < last.len() || !text.ends_with(last.as_str()) {
        return false;
    }
    text = &text[..text.len() - last.len()];
    for piece in middle {
        match text.find(piece.as_str()) {
            Some(at) => text = &text[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// Splits a format string into its literal pieces (`{...}` are the gaps).
fn format_pieces(format: &str) -> Vec<String> {
    let mut pieces = vec![String::new()];
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                pieces.last_mut().unwrap().push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                pieces.last_mut().unwrap().push('}');
            }
            '{' => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                pieces.push(String::new());
            }
            c => pieces.last_mut().unwrap().push(c),
        }
    }
    pieces
}

/// Reads the string literal that starts at `s` (just after its opening quote); `None` for
/// what this reader does not understand.
fn string_literal(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                '\n' => {
                    while chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                }
                _ => return None,
            },
            c => out.push(c),
        }
    }
    None
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every log line of `src/`; errors for the macros whose format string cannot be read.
fn log_lines() -> (Vec<LogLine>, Vec<String>) {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    files.sort();
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let rel = file.strip_prefix(root()).unwrap().display().to_string();
        let kinds = [
            ("error!(", "stickyd: error: ", true),
            ("warn!(", "stickyd: warn: ", true),
            ("info!(", "stickyd: ", true),
            ("eprintln!(", "", false),
            ("say!(", "", false),
        ];
        for (needle, prefix, from_macro) in kinds {
            let mut from = 0;
            while let Some(found) = text[from..].find(needle) {
                let at = from + found;
                from = at + needle.len();
                let before = text[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue; // `debug_warn!(` and the like
                }
                let line = text[..at].matches('\n').count() + 1;
                let where_ = format!("{rel}:{line}");
                let args = text[from..].trim_start();
                let literal = args.strip_prefix('"').and_then(string_literal);
                let Some(format) = literal else {
                    if from_macro {
                        errors.push(format!(
                            "{where_}: `{needle}` without a plain string literal first: \
                             tests/docs.rs cannot read this log line"
                        ));
                    }
                    continue;
                };
                if !from_macro && !format.starts_with("stickyd: ") {
                    continue; // not a line of the master's log
                }
                if !from_macro && format_pieces(&format).concat().trim_end() == "stickyd: error:" {
                    continue; // the fatal error's printer: its text is the error's
                }
                let mut pieces = format_pieces(&format);
                pieces[0].insert_str(0, prefix);
                lines.push(LogLine {
                    at: where_,
                    pieces,
                    from_macro,
                    source: format!("{needle}\"{format}\")"),
                });
            }
        }
    }
    (lines, errors)
}

/// A line of a `log` block, or of a troubleshooting entry, that stickyd cannot print.
fn unknown_log_line(line: &str, known: &[LogLine]) -> bool {
    !known.iter().any(|l| l.matches(line))
}

#[test]
fn code_blocks_and_commands_pass_their_checks() {
    let (known_logs, log_errors) = log_lines();
    let mut checker = Checker {
        live: None,
        tmp: TempDir::new("docs-blocks"),
        temps: Vec::new(),
    };
    let mut r = Report::default();
    r.errors.extend(log_errors);
    let node = find_program("node");
    let analyze = find_program("systemd-analyze");
    for doc in docs() {
        let mut aliases = Aliases {
            dir: checker.tmp.0.clone(),
            files: HashMap::new(),
        };
        let mut units: Vec<(String, String, String)> = Vec::new(); // at, name, content
        let mut copies_match = true;
        for block in &doc.blocks {
            let at = doc.at(block.line);
            let text = block.text();
            // What the marker says comes first: it may apply to any language.
            match block.marker.as_deref() {
                Some(m) if m.starts_with("copy of ") => {
                    let path = m.trim_start_matches("copy of ").trim();
                    match std::fs::read_to_string(root().join(path)) {
                        Ok(file) if file == text => {
                            r.checked.push(format!("{at}: a copy of {path}"));
                            if path.ends_with(".service") || path.ends_with(".socket") {
                                let name = Path::new(path).file_name().unwrap();
                                units.push((
                                    at.clone(),
                                    name.to_string_lossy().into_owned(),
                                    text.clone(),
                                ));
                            }
                        }
                        Ok(_) => {
                            copies_match = false;
                            r.errors.push(format!(
                                "{at}: the block is not {path} as it is in the repository: copy \
                                 it again"
                            ));
                        }
                        Err(e) => r.errors.push(format!("{at}: {path}: {e}")),
                    }
                }
                Some(m) if m.starts_with("excerpt of ") => {
                    let path = m.trim_start_matches("excerpt of ").trim();
                    match std::fs::read_to_string(root().join(path)) {
                        Ok(file) => {
                            let mut lines = file.lines();
                            for (n, wanted) in &block.body {
                                if !lines.any(|l| l.trim_end() == wanted.trim_end()) {
                                    r.errors.push(format!(
                                        "{}: `{}` is not a line of {path} (in this order)",
                                        doc.at(*n),
                                        wanted.trim()
                                    ));
                                    break;
                                }
                            }
                            r.checked.push(format!("{at}: an excerpt of {path}"));
                        }
                        Err(e) => r.errors.push(format!("{at}: {path}: {e}")),
                    }
                }
                Some(m) if m.starts_with("stdout of stickyd ") => {
                    let args: Vec<&str> = m
                        .trim_start_matches("stdout of stickyd ")
                        .split_whitespace()
                        .collect();
                    let out = Command::new(stickyd_bin())
                        .args(&args)
                        .current_dir(root())
                        .output()
                        .expect("run stickyd");
                    if out.stdout != text.as_bytes() {
                        r.errors.push(format!(
                            "{at}: the block is not what `stickyd {}` prints now:\n{}",
                            args.join(" "),
                            String::from_utf8_lossy(&out.stdout)
                        ));
                    } else {
                        r.checked.push(format!("{at}: stdout of stickyd"));
                    }
                }
                Some("log") => {
                    for (n, line) in &block.body {
                        let line = match line.find("  #") {
                            Some(i) => line[..i].trim_end(),
                            None => line.trim_end(),
                        };
                        if line.starts_with("stickyd: ") && unknown_log_line(line, &known_logs) {
                            r.errors.push(format!(
                                "{}: `{line}` is not a line stickyd logs (src/ has no such \
                                 error!, warn!, info! or print)",
                                doc.at(*n)
                            ));
                        }
                    }
                    r.checked.push(format!("{at}: log lines"));
                }
                Some(other) => r.errors.push(format!(
                    "{at}: unknown marker `docs-test: {other}` (copy of PATH, excerpt of PATH, \
                     stdout of stickyd ARGS, log)"
                )),
                None => {}
            }
            match block.lang.as_str() {
                "sh" | "bash" | "shell" | "console" => {
                    for (n, line) in shell_lines(block) {
                        let at = doc.at(n);
                        match split_commands(&line) {
                            Ok(commands) => {
                                for words in commands {
                                    if let Some(cmd) = simple_command(words) {
                                        checker.command(cmd, &mut aliases, &at, &mut r);
                                    }
                                }
                            }
                            Err(e) => r.errors.push(format!("{at}: `{line}`: {e}")),
                        }
                    }
                }
                "toml" => {
                    let first = block.body.first().map(|(_, l)| l.as_str()).unwrap_or("");
                    let cargo = block.body.iter().any(|(_, l)| {
                        let l = l.trim();
                        [
                            "[package]",
                            "[dependencies]",
                            "[dev-dependencies]",
                            "[workspace]",
                        ]
                        .contains(&l)
                    });
                    if cargo {
                        match toml::from_str::<toml::Table>(&text) {
                            Ok(_) => r.checked.push(format!("{at}: a Cargo manifest, TOML")),
                            Err(e) => r.errors.push(format!("{at}: not TOML: {e}")),
                        }
                        continue;
                    }
                    let file = checker.temp_file("config.toml", &doc, block);
                    if let Some(path) = first.strip_prefix("# ").filter(|p| p.starts_with('/')) {
                        aliases.files.insert(path.trim().to_owned(), file.clone());
                    }
                    let args = ["--config".to_owned(), file.display().to_string()];
                    match check_stickyd(&args, &aliases) {
                        Ok(()) => r
                            .checked
                            .push(format!("{at}: a configuration, stickyd --check")),
                        Err(e) => r.errors.push(format!("{at}: {}", checker.explain(&e))),
                    }
                }
                "ini" => {
                    for (n, line) in &block.body {
                        let Some(command) = line.strip_prefix("ExecStart=") else {
                            continue;
                        };
                        match split_commands(command) {
                            Ok(commands) => {
                                for words in commands {
                                    if let Some(cmd) = simple_command(words) {
                                        checker.command(cmd, &mut aliases, &doc.at(*n), &mut r);
                                    }
                                }
                            }
                            Err(e) => r.errors.push(format!("{}: {e}", doc.at(*n))),
                        }
                    }
                }
                "js" | "javascript" => match &node {
                    Some(node) => {
                        let file = checker.temp_file("snippet.js", &doc, block);
                        let out = Command::new(node)
                            .arg("--check")
                            .arg(&file)
                            .output()
                            .expect("run node --check");
                        if out.status.success() {
                            r.checked.push(format!("{at}: node --check"));
                        } else {
                            let stderr = String::from_utf8_lossy(&out.stderr);
                            let first: Vec<&str> = stderr.lines().take(5).collect();
                            r.errors.push(format!(
                                "{at}: node --check: {}",
                                checker.explain(&first.join(" / "))
                            ));
                        }
                    }
                    None if std::env::var_os("STICKYD_REQUIRE_NODE").is_some() => r
                        .errors
                        .push(format!("{at}: js: node is not installed (CI installs it)")),
                    None => r.skipped.push(format!("{at}: js: node is not installed")),
                },
                "rust" => r.skipped.push(format!(
                    "{at}: rust: not compiled here (the crates' doctests and examples are)"
                )),
                "dockerfile" => match dockerfile_command(&text) {
                    Ok(args) => match check_stickyd(&args, &aliases) {
                        Ok(()) => r
                            .checked
                            .push(format!("{at}: the Dockerfile's stickyd --check")),
                        Err(e) => r.errors.push(format!("{at}: {}", checker.explain(&e))),
                    },
                    Err(e) => r.errors.push(format!("{at}: {e}")),
                },
                "json" => match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(_) => r.checked.push(format!("{at}: JSON")),
                    Err(e) => r.errors.push(format!("{at}: not JSON: {e}")),
                },
                // Text: output, pictures, synopses; a marker above says when it is checked.
                "" | "text" | "haproxy" => {}
                other => r.errors.push(format!(
                    "{at}: a ```{other} block: tests/docs.rs does not know how to check it \
                     (teach it, or use text)"
                )),
            }
        }
        if !units.is_empty() && copies_match {
            match &analyze {
                Some(analyze) => {
                    let dir = checker
                        .tmp
                        .0
                        .join(format!("units-{}", doc.rel.replace('/', "-")));
                    std::fs::create_dir_all(&dir).expect("units dir");
                    let bin = stickyd_bin().display().to_string();
                    let names: Vec<&str> = units.iter().map(|(_, n, _)| n.as_str()).collect();
                    for (_, name, content) in &units {
                        // ExecStart names the installed binary; point it at the built one.
                        let content = content.replace("/usr/local/bin/stickyd", &bin);
                        std::fs::write(dir.join(name), content).expect("write a unit");
                    }
                    let out = Command::new(analyze)
                        .arg("verify")
                        .args(&names)
                        .current_dir(&dir)
                        .output()
                        .expect("run systemd-analyze verify");
                    let at = &units[0].0;
                    if out.status.success() {
                        r.checked
                            .push(format!("{at}: systemd-analyze verify {names:?}"));
                    } else {
                        r.errors.push(format!(
                            "{at}: systemd-analyze verify {names:?}: {}{}",
                            String::from_utf8_lossy(&out.stdout).trim(),
                            String::from_utf8_lossy(&out.stderr).trim()
                        ));
                    }
                }
                None => r.skipped.push(format!(
                    "{}: systemd-analyze is not installed: the units are not verified",
                    units[0].0
                )),
            }
        }
    }
    eprintln!(
        "docs: {} checks passed; not run here ({}):",
        r.checked.len(),
        r.skipped.len()
    );
    for s in &r.skipped {
        eprintln!("  {s}");
    }
    assert!(
        r.checked
            .iter()
            .filter(|c| c.contains("stickyd --check"))
            .count()
            > 20,
        "too few stickyd command lines found: is the block reader broken?"
    );
    fail(&r.errors);
}

// ---- what stickyd says about itself -----------------------------------------------------------

#[test]
fn every_log_line_has_a_troubleshooting_entry_and_every_entry_is_logged() {
    let (known, mut errors) = log_lines();
    assert!(
        known.len() > 50,
        "only {} log lines found in src/",
        known.len()
    );
    let page = Doc::read(&root().join("docs/src/troubleshooting.md"));
    let entries: Vec<(usize, String)> = page
        .code_spans()
        .into_iter()
        .filter(|(_, span, table)| !table && span.starts_with("stickyd: "))
        .map(|(n, span, _)| (n, span))
        .collect();
    for line in known.iter().filter(|l| l.from_macro) {
        if !entries.iter().any(|(_, span)| line.matches(span)) {
            errors.push(format!(
                "{}: `{}` has no entry in docs/src/troubleshooting.md: add the line as the \
                 operator sees it (`{}`, the placeholders in capitals), what it means and what \
                 to do",
                line.at,
                line.source,
                line.pieces.join("X")
            ));
        }
    }
    for (n, span) in &entries {
        if unknown_log_line(span, &known) {
            errors.push(format!(
                "{}: `{span}` is not a line stickyd logs (no error!, warn!, info! or print in \
                 src/ matches it)",
                page.at(*n)
            ));
        }
    }
    fail(&errors);
}

/// The long flags `stickyd --help` lists, but `--help` and `--version`.
fn help_flags() -> BTreeSet<String> {
    let (flags, text) = util::help_flags();
    let flags: BTreeSet<String> = flags
        .into_iter()
        .filter(|f| f != "--help" && f != "--version")
        .collect();
    assert!(
        flags.len() > 10,
        "no flags read from stickyd --help: {text}"
    );
    flags
}

fn long_flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("--") {
        let flag: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '-')
            .collect();
        if flag.starts_with(|c: char| c.is_ascii_lowercase()) {
            out.insert(format!("--{flag}"));
        }
    }
    out
}

#[test]
fn the_flag_table_and_the_synopsis_name_every_flag_of_stickyd_help() {
    let help = help_flags();
    let page = Doc::read(&root().join("docs/src/running.md"));
    let mut errors = Vec::new();
    let mut table = BTreeSet::new();
    let mut table_line = 0;
    for (n, line) in &page.prose {
        if let Some(rest) = line.strip_prefix("| `--") {
            if table_line == 0 {
                table_line = *n;
            }
            let flag = rest.split(['`', ' ']).next().unwrap_or("");
            if flag.is_empty() {
                continue; // `-- WORKER_COMMAND ARGS`
            }
            if !table.insert(format!("--{flag}")) {
                errors.push(format!("{}: --{flag} is in the table twice", page.at(*n)));
            }
        }
    }
    let synopsis = page
        .blocks
        .iter()
        .find(|b| {
            b.body
                .first()
                .is_some_and(|(_, l)| l.starts_with("stickyd ["))
        })
        .expect("docs/src/running.md has the synopsis block (`stickyd [--listen ...`)");
    let synopsis_flags = long_flags(&synopsis.text());
    for (what, flags, line) in [
        ("the flag table", &table, table_line),
        ("the synopsis", &synopsis_flags, synopsis.line),
    ] {
        for missing in help.difference(flags) {
            errors.push(format!(
                "{}: {what} lacks {missing}, which stickyd --help lists",
                page.at(line)
            ));
        }
        for extra in flags.difference(&help) {
            errors.push(format!(
                "{}: {what} lists {extra}, which stickyd --help does not know",
                page.at(line)
            ));
        }
    }
    fail(&errors);
}

#[test]
fn the_metrics_table_names_exactly_what_stickyd_exports() {
    let metrics = stickyd::metrics::Metrics::new(&["l0".to_owned()], 2);
    let mut text = String::new();
    metrics.render(&mut text);
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    let page = Doc::read(&root().join("docs/src/metrics.md"));
    let mut listed = BTreeSet::new();
    for (_, line) in &page.prose {
        if line.starts_with("| `stickyd_") {
            let cell = line.split('|').nth(1).unwrap_or("");
            for (i, _) in cell.match_indices("stickyd_") {
                let name: String = cell[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                listed.insert(name);
            }
        }
    }
    let mut errors = Vec::new();
    for missing in exported.difference(&listed) {
        errors.push(format!(
            "docs/src/metrics.md: the metrics table lacks {missing}, which stickyd exports"
        ));
    }
    for extra in listed.difference(&exported) {
        errors.push(format!(
            "docs/src/metrics.md: the metrics table lists {extra}, which stickyd does not export"
        ));
    }
    fail(&errors);
}

// ---- the first commands -----------------------------------------------------------------------

/// The first ```sh block of a page, its commands without their comments.
fn first_commands(doc: &Doc) -> Vec<(usize, String)> {
    let block = doc
        .blocks
        .iter()
        .find(|b| b.lang == "sh")
        .unwrap_or_else(|| panic!("{}: no ```sh block", doc.rel));
    block
        .body
        .iter()
        .map(|(n, l)| {
            let command = match l.find("   #") {
                Some(i) => &l[..i],
                None => l,
            };
            (*n, command.trim().to_owned())
        })
        .collect()
}

#[test]
fn the_readme_runs_stickyd_and_the_tests_ci_runs() {
    let readme = Doc::read(&root().join("README.md"));
    let commands = first_commands(&readme);
    let mut errors = Vec::new();
    let run = commands.first().map(|(_, c)| c.as_str());
    if run != Some("cargo run --release") {
        errors.push(format!(
            "{}: the first command is not `cargo run --release`",
            readme.at(commands.first().map_or(1, |(n, _)| *n))
        ));
    }
    let ci = std::fs::read_to_string(root().join(".ci/run")).expect(".ci/run");
    let ci_tests = ci
        .lines()
        .rev()
        .find(|l| l.starts_with("cargo build"))
        .expect(".ci/run builds and tests")
        .replace(" --locked", "");
    match commands.get(1) {
        Some((n, c)) if *c != ci_tests => errors.push(format!(
            "{}: the test command is not the one .ci/run runs (less --locked):\n  README: \
             {c}\n  CI:     {ci_tests}",
            readme.at(*n)
        )),
        None => errors.push(format!("{}: no test command", readme.rel)),
        _ => {}
    }
    let start = Doc::read(&root().join("docs/src/getting-started.md"));
    let again = first_commands(&start);
    if again
        .iter()
        .map(|(_, c)| c)
        .ne(commands.iter().map(|(_, c)| c))
    {
        errors.push(format!(
            "{}: the first commands differ from the README's",
            start.at(again.first().map_or(1, |(n, _)| *n))
        ));
    }
    fail(&errors);
}

#[test]
fn check_binds_nothing_so_the_docs_ports_are_safe_to_check() {
    // The docs' command lines name ports that may be in use here (3000, 80, 443): --check
    // must not bind them. A port held right now passes the check.
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().unwrap().to_string();
    let out: Output = Command::new(stickyd_bin())
        .args(["--check", "--listen", &addr, "--metrics", &addr])
        .output()
        .expect("run stickyd --check");
    assert!(
        out.status.success(),
        "stickyd --check on a port in use: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
