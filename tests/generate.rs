//! `stickyd --generate KIND`: the man page and the shell completions are generated from the
//! same clap definitions as `--help`, print to stdout, exit 0 and start nothing. Each is what it
//! claims to be: roff that names every flag, and completion scripts for bash, zsh and fish that
//! name every flag, checked by the shell itself where it is installed (and bash's completion
//! run for real).

mod util;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

fn stickyd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stickyd"))
        .args(args)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run stickyd")
}

/// `stickyd --generate KIND` (and `extra` args): its stdout, after checking that it exits 0
/// and says nothing on stderr.
fn generate(kind: &str, extra: &[&str]) -> String {
    let mut args = vec!["--generate", kind];
    args.extend_from_slice(extra);
    let out = stickyd(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    assert!(stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The long flags `stickyd --help` lists, `--help` and `--version` included.
fn help_flags() -> BTreeSet<String> {
    let (flags, text) = util::help_flags();
    for flag in ["--generate", "--check", "--listen", "--help", "--version"] {
        assert!(flags.contains(flag), "{flag} not read from --help: {text}");
    }
    flags
}

/// A shell's path, if it is installed here.
fn shell(name: &str) -> Option<PathBuf> {
    ["/bin", "/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

/// Runs `shell -n` (parse, do not run) on `script`: the script is that shell's syntax.
fn syntax_check(name: &str, script: &str) {
    let Some(sh) = shell(name) else {
        eprintln!("{name} is not installed: its completion script's syntax is not checked");
        return;
    };
    let dir = std::env::temp_dir().join(format!("stickyd-generate-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("completion.{name}"));
    std::fs::write(&file, script).unwrap();
    let out = Command::new(sh).arg("-n").arg(&file).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{name} -n rejects the completion script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_man_page_is_roff_and_names_every_flag() {
    let man = generate("man", &[]);
    assert!(man.contains("\n.TH stickyd 1 "), "no .TH line:\n{man}");
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        ".SH \"EXIT STATUS\"",
        ".SH \"SIGNALS\"",
        ".SH \"ENVIRONMENT\"",
    ] {
        assert!(man.contains(section), "no {section}:\n{man}");
    }
    for flag in help_flags() {
        // roff spells a hyphen `\-`.
        let roff = format!("\\fB{}\\fR", flag.replace('-', "\\-"));
        assert!(man.contains(&roff), "the man page lacks {flag} ({roff})");
    }
    // groff formats it without a warning, where it is installed.
    let Some(groff) = shell("groff") else {
        eprintln!("groff is not installed: the man page is not formatted");
        return;
    };
    let out = Command::new(groff)
        .args(["-man", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(man.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run groff");
    assert!(out.status.success(), "groff fails");
    assert!(
        out.stderr.is_empty(),
        "groff warns: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_bash_completion_defines_its_function_and_completes_the_flags() {
    let script = generate("complete-bash", &[]);
    assert!(script.contains("_stickyd() {"), "no _stickyd function");
    assert!(
        script.contains("complete -F _stickyd"),
        "the function is not registered for stickyd"
    );
    for flag in help_flags() {
        assert!(script.contains(&flag), "the bash completion lacks {flag}");
    }
    syntax_check("bash", &script);
    let Some(bash) = shell("bash") else {
        return;
    };
    // Completes as bash would: a flag's prefix, and a flag's values.
    let probe = r#"
source /dev/stdin
COMP_WORDS=(stickyd --back); COMP_CWORD=1; _stickyd stickyd --back stickyd
echo "1: ${COMPREPLY[*]}"
COMP_WORDS=(stickyd --generate ""); COMP_CWORD=2; _stickyd stickyd "" --generate
echo "2: ${COMPREPLY[*]}"
"#;
    let out = Command::new(bash)
        .args(["--norc", "--noprofile", "-c", probe])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(script.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run bash");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1: --backend\n"), "{text}");
    assert!(
        text.contains("2: man complete-bash complete-zsh complete-fish\n"),
        "{text}"
    );
}

#[test]
fn the_zsh_completion_is_a_compdef_function_naming_the_flags() {
    let script = generate("complete-zsh", &[]);
    assert!(script.starts_with("#compdef stickyd\n"), "no #compdef line");
    assert!(script.contains("_stickyd() {"), "no _stickyd function");
    for flag in help_flags() {
        // `'--flag[...]'`, `'--flag=[...]'`, and `'*--flag=[...]'` when it repeats.
        let named = ["'", "'*"].iter().any(|p| {
            script.contains(&format!("{p}{flag}[")) || script.contains(&format!("{p}{flag}=["))
        });
        assert!(named, "the zsh completion lacks {flag}");
    }
    syntax_check("zsh", &script);
}

#[test]
fn the_fish_completion_names_every_flag() {
    let script = generate("complete-fish", &[]);
    for flag in help_flags() {
        let long = format!(" -l {}", flag.trim_start_matches("--"));
        assert!(
            script.lines().any(|l| l.starts_with("complete -c stickyd ")
                && (l.contains(&format!("{long} ")) || l.ends_with(&long))),
            "the fish completion lacks {flag}"
        );
    }
    syntax_check("fish", &script);
}

#[test]
fn generate_starts_nothing_and_leaves_the_other_flags_alone() {
    // The port is taken: stickyd would fail to bind it if it started anything.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let man = generate("man", &["--listen", &addr, "--workers", "2"]);
    assert!(man.contains(".TH stickyd"), "{man}");
    // --check before it does not change what is printed.
    assert_eq!(generate("man", &["--check"]), generate("man", &[]));

    // A bad kind, or a bad value of another flag, is still a bad command line.
    for (args, needle) in [
        (&["--generate", "powershell"][..], "--generate"),
        (&["--generate"][..], "--generate"),
        (&["--generate", "man", "--workers", "0"][..], "--workers"),
    ] {
        let out = stickyd(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }

    // Without --generate, --check does what it did.
    let out = stickyd(&["--check", "--listen", &addr, "--workers", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout.contains("workers = 2\n"), "{stdout}");
    assert!(!stdout.contains(".TH"), "{stdout}");
}
