use super::*;
use std::path::PathBuf;

fn parse(text: &str) -> FileSettings {
    FileSettings::parse(Path::new("s.toml"), text)
        .unwrap_or_else(|e| panic!("{text:?} did not parse: {e}"))
}

fn error(text: &str) -> String {
    match FileSettings::parse(Path::new("/etc/stickyd.toml"), text) {
        Ok(file) => panic!("{text:?} parsed: {file:?}"),
        Err(e) => e.to_string(),
    }
}

fn rule(text: &str) -> KeyRule {
    text.parse().unwrap()
}

fn cidr(text: &str) -> Cidr {
    text.parse().unwrap()
}

const EXAMPLE: &str = r#"
workers = 4
peek-timeout = "250ms"
on-timeout = "close"
max-peek = "4KiB"
grace = "1m"
metrics = "127.0.0.1:9100"
max-queue = 64
backend = "epoll"
key = ["header:x-forwarded-for"]   # for listeners that say nothing
fallback = "cookie:sid"
trust = ["10.0.0.0/8"]
proxy-protocol = false
worker-command = ["/usr/bin/app", "--serve", ""]

[[listener]]
name = "public"
addr = "0.0.0.0:443"
key = ["sni"]
proxy-protocol = true
trust = ["10.1.0.0/16", "::1"]

[[listener]]
addr = "127.0.0.1:8080"
key = ["header:x-user", "cookie:sid"]
fallback = "ip"

[[listener]]
name = "plain"
addr = "[::1]:0"
"#;

#[test]
fn every_setting_of_the_example() {
    let file = parse(EXAMPLE);
    assert_eq!(file.workers, Some(4));
    assert_eq!(file.peek_timeout, Some(Duration::from_millis(250)));
    assert_eq!(file.on_timeout, Some(OnTimeout::Close));
    assert_eq!(file.max_peek, Some(4096));
    assert_eq!(file.grace, Some(Duration::from_secs(60)));
    assert_eq!(file.metrics, Some("127.0.0.1:9100".parse().unwrap()));
    assert_eq!(file.max_queue, Some(64));
    assert_eq!(file.backend, Some(Backend::Epoll));
    assert_eq!(
        file.rules,
        RuleSettings {
            keys: Some(vec![rule("header:x-forwarded-for")]),
            fallback: Some(rule("cookie:sid")),
            trust: Some(vec![cidr("10.0.0.0/8")]),
        }
    );
    assert_eq!(file.proxy_protocol, Some(false));
    let command = file.worker_command.unwrap();
    assert_eq!(command.program, "/usr/bin/app");
    assert_eq!(command.args, ["--serve", ""]);

    let names: Vec<_> = file.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["public", "l1", "plain"]);
    let public = &file.listeners[0];
    assert_eq!(public.addr, "0.0.0.0:443".parse().unwrap());
    assert_eq!(public.rules.keys, Some(vec![KeyRule::Sni]));
    assert_eq!(public.rules.fallback, None);
    assert_eq!(
        public.rules.trust,
        Some(vec![cidr("10.1.0.0/16"), cidr("::1/128")])
    );
    assert_eq!(public.proxy_protocol, Some(true));
    let api = &file.listeners[1];
    assert_eq!(
        api.rules.keys,
        Some(vec![rule("header:x-user"), rule("cookie:sid")])
    );
    assert_eq!(api.rules.fallback, Some(KeyRule::Ip));
    assert_eq!(api.rules.trust, None);
    assert_eq!(api.proxy_protocol, None);
    assert!(file.listeners[2].rules.is_empty());
}

#[test]
fn an_empty_file_says_nothing() {
    let file = parse("# nothing here\n");
    assert!(file.workers.is_none() && file.peek_timeout.is_none() && file.metrics.is_none());
    assert!(file.rules.is_empty() && file.proxy_protocol.is_none());
    assert!(file.worker_command.is_none() && file.listeners.is_empty());
}

#[test]
fn numbers_are_integers_or_the_flags_text() {
    let file = parse("workers = \"3\"\nmax-peek = 4096\nmax-queue = \"10\"\n");
    assert_eq!(file.workers, Some(3));
    assert_eq!(file.max_peek, Some(4096));
    assert_eq!(file.max_queue, Some(10));
}

#[test]
fn a_listener_takes_what_it_leaves_out_from_the_dispatcher() {
    let wide = KeyPlan::new(vec![rule("header:x-user")], rule("cookie:sid"))
        .with_trust(Trust::new(vec![cidr("10.0.0.0/8")]));
    let file = parse(
        "[[listener]]\naddr = \"127.0.0.1:0\"\n\
         [[listener]]\naddr = \"127.0.0.1:0\"\nfallback = \"query:s\"\n\
         [[listener]]\naddr = \"127.0.0.1:0\"\ntrust = []\nproxy-protocol = true\n",
    );
    let specs: Vec<ListenSpec> = file
        .listeners
        .into_iter()
        .map(|l| l.into_spec(&wide))
        .collect();
    assert!(specs[0].plan.is_none() && specs[0].proxy_protocol.is_none());
    let own = specs[1].plan.as_ref().unwrap();
    assert_eq!(own.rules(), wide.rules());
    assert_eq!(own.fallback(), &rule("query:s"));
    assert_eq!(own.trust(), wide.trust());
    let own = specs[2].plan.as_ref().unwrap();
    assert_eq!(own.rules(), wide.rules());
    assert_eq!(own.fallback(), wide.fallback());
    assert!(own.trust().is_empty());
    assert_eq!(specs[2].proxy_protocol, Some(true));
}

#[test]
fn rule_settings_combine_part_by_part() {
    let flags = RuleSettings {
        keys: Some(vec![KeyRule::Sni]),
        ..RuleSettings::default()
    };
    let file = RuleSettings {
        keys: Some(vec![KeyRule::Ip]),
        fallback: Some(rule("cookie:a")),
        trust: None,
    };
    let both = flags.or(file);
    assert_eq!(both.keys, Some(vec![KeyRule::Sni]));
    assert_eq!(both.fallback, Some(rule("cookie:a")));
    assert_eq!(both.trust, None);
    let plan = both.plan(&KeyPlan::new(vec![KeyRule::Ip], KeyRule::Ip));
    assert_eq!(plan.rules(), [KeyRule::Sni]);
    assert_eq!(plan.fallback(), &rule("cookie:a"));
    assert!(plan.trust().is_empty());
}

/// Each bad value is named with its file, line and key, in the words of the flag's parser.
#[test]
fn errors_name_the_file_the_line_and_the_key() {
    let at = |line: usize, rest: &str| format!("/etc/stickyd.toml:{line}: {rest}");
    for (text, expected) in [
        (
            "workers = 0",
            at(1, "workers: '0' is not a number from 1 to 4096"),
        ),
        (
            "\nworkers = 5000",
            at(2, "workers: '5000' is not a number from 1 to 4096"),
        ),
        (
            "workers = -1",
            at(1, "workers: '-1' is not a number from 1 to 4096"),
        ),
        (
            "workers = 2\n\npeek-timeout = \"5\"",
            at(
                3,
                "peek-timeout: '5' is not a duration (e.g. 250ms, 5s, 1m)",
            ),
        ),
        (
            "peek-timeout = \"0s\"",
            at(1, "peek-timeout: must be more than zero"),
        ),
        (
            "on-timeout = \"never\"",
            at(1, "on-timeout: 'never' is not one of fallback, close"),
        ),
        (
            "max-peek = 1",
            at(1, "max-peek: must be from 64 to 1048576 bytes"),
        ),
        (
            "max-peek = \"16kb\"",
            at(1, "max-peek: '16kb' is not a size (e.g. 4096, 16KiB, 1MiB)"),
        ),
        (
            "grace = \"25h\"",
            at(1, "grace: '25h' is longer than the most allowed, 24h"),
        ),
        (
            "metrics = \"localhost:9100\"",
            at(
                1,
                "metrics: 'localhost:9100' is not an address:port (e.g. 127.0.0.1:3000 or [::1]:3000)",
            ),
        ),
        (
            "max-queue = 65537",
            at(1, "max-queue: '65537' is not a number from 1 to 65536"),
        ),
        (
            "backend = \"kqueue\"",
            at(1, "backend: 'kqueue' is not one of auto, uring, epoll"),
        ),
        ("key = []", at(1, "key: give at least one rule")),
        (
            "key = [\n  \"ip\",\n  \"bogus\",\n]",
            at(
                3,
                "key: unknown key rule 'bogus' (expected ip, header:NAME, cookie:NAME, query:NAME or sni)",
            ),
        ),
        (
            "fallback = \"header:\"",
            at(1, "fallback: empty header name in 'header:'"),
        ),
        (
            "trust = [\"10.0.0.0/8\", \"10.0.0.0/33\"]",
            at(
                1,
                "trust: prefix length 33 is longer than the 32 bits of an IPv4 address",
            ),
        ),
        (
            "proxy-protocol = \"yes\"",
            at(
                1,
                "proxy-protocol: invalid type: string \"yes\", expected a boolean",
            ),
        ),
        (
            "worker-command = []",
            at(1, "worker-command: name a program first"),
        ),
        (
            "worker-command = \"app --serve\"",
            at(
                1,
                "worker-command: invalid type: string \"app --serve\", expected a sequence",
            ),
        ),
        (
            "workers = 1\n\n[[listener]]\nname = \"a\"\naddr = \"1.2.3.4\"",
            at(
                5,
                "listener.addr: '1.2.3.4' is not an address:port (e.g. 127.0.0.1:3000 or [::1]:3000)",
            ),
        ),
        (
            "[[listener]]\nname = \"a b\"\naddr = \"127.0.0.1:0\"",
            at(
                2,
                "listener.name: listener name 'a b' may only use letters, digits, '-', '_' and '.'",
            ),
        ),
        (
            "[[listener]]\nname = \"a\"\naddr = \"127.0.0.1:0\"\n\
             [[listener]]\naddr = \"127.0.0.1:0\"\nname = \"a\"",
            at(6, "listener.name: the name 'a' is used twice"),
        ),
        (
            "[[listener]]\nname = \"l1\"\naddr = \"127.0.0.1:0\"\n\
             [[listener]]\naddr = \"127.0.0.1:1\"",
            at(
                5,
                "listener.name: this listener's default name 'l1' is already used: name it",
            ),
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:0\"\nkey = [\"cookie:a=b\"]",
            at(
                3,
                "listener.key: invalid cookie name in 'cookie:a=b': '=' is not allowed",
            ),
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"x\"",
            at(4, "listener: missing field `addr`"),
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:0\"\nproxy-protocol = 1",
            at(
                3,
                "listener.proxy-protocol: invalid type: integer `1`, expected a boolean",
            ),
        ),
        (
            "[listener]\naddr = \"127.0.0.1:0\"",
            at(1, "listener: invalid type: map, expected a sequence"),
        ),
    ] {
        assert_eq!(error(text), expected, "{text:?}");
    }
}

#[test]
fn unknown_keys_are_errors() {
    let e = error("workers = 2\nlisten = [\"127.0.0.1:0\"]\n");
    assert!(
        e.starts_with("/etc/stickyd.toml:2: listen: unknown field `listen`, expected one of"),
        "{e}"
    );
    let e = error("[[listener]]\naddr = \"127.0.0.1:0\"\nmax-peek = 100\n");
    assert!(
        e.starts_with("/etc/stickyd.toml:3: listener.max-peek: unknown field `max-peek`"),
        "{e}"
    );
    let e = error("listener = [{ addr = \"127.0.0.1:0\" }, { addr = \"127.0.0.1:0\", x = 1 }]");
    assert!(
        e.starts_with("/etc/stickyd.toml:1: listener.x: unknown field `x`"),
        "{e}"
    );
}

#[test]
fn toml_syntax_errors_name_the_line() {
    for (text, line) in [
        ("workers = 2\nworkers = 3\n", 2),
        ("workers = 2\n\ngrace = 10s\n", 3),
        ("[[listener]\n", 1),
        ("key = [\"ip\"\n", 1),
    ] {
        let e = error(text);
        let prefix = format!("/etc/stickyd.toml:{line}: ");
        assert!(e.starts_with(&prefix), "{text:?}: {e}");
        assert!(!e.contains('\n'), "{text:?}: {e}");
    }
}

#[test]
fn too_many_listeners() {
    let mut text = String::new();
    for _ in 0..=MAX_LISTENERS {
        text.push_str("[[listener]]\naddr = \"127.0.0.1:0\"\n");
    }
    let line = 2 * MAX_LISTENERS + 1;
    assert_eq!(
        error(&text),
        format!("/etc/stickyd.toml:{line}: listener: more than 256 listeners")
    );
}

#[test]
fn a_value_spanning_lines_is_reported_on_one() {
    let e = error("metrics = \"\"\"\n127.0.0.1\n\"\"\"\n");
    assert!(e.starts_with("/etc/stickyd.toml:1: metrics: '"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, bytes: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "stickyd-config-unit-{}-{tag}.toml",
            std::process::id()
        ));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn loading_names_the_path_and_the_os_error() {
    let good = TempFile::new("good", b"workers = 2\n");
    assert_eq!(FileSettings::load(&good.0).unwrap().workers, Some(2));

    let missing = std::env::temp_dir().join("stickyd-config-unit-no-such-file.toml");
    let e = FileSettings::load(&missing).unwrap_err();
    assert!(matches!(e, FileError::Read { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: cannot read the configuration file: No such file or directory (os error 2)",
            missing.display()
        )
    );

    let binary = TempFile::new("binary", b"workers = \xff\n");
    let e = FileSettings::load(&binary.0).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: cannot read", binary.0.display())),
        "{e}"
    );

    let huge = TempFile::new("huge", &vec![b'#'; MAX_FILE_SIZE as usize + 1]);
    let e = FileSettings::load(&huge.0).unwrap_err();
    assert!(matches!(e, FileError::TooLarge { .. }), "{e}");
}
