//! The configuration file (`--config FILE`): TOML, for what the command line says badly, such
//! as several listeners, each with key rules of its own.
//!
//! ```toml
//! workers = 4
//! peek-timeout = "5s"
//! key = ["header:x-forwarded-for"]   # for the listeners that give no rule of their own
//! trust = ["10.0.0.0/8"]
//! worker-command = ["/usr/bin/app", "--serve"]
//!
//! [[listener]]
//! name = "public"
//! addr = "0.0.0.0:443"
//! key = ["sni"]
//! proxy-protocol = true
//!
//! [[listener]]
//! name = "api"
//! addr = "127.0.0.1:8080"
//! key = ["header:x-user", "cookie:sid"]
//! ```
//!
//! Each top-level key is named after its flag and takes the text the flag takes, read by the same
//! parser ([`super::values`], [`KeyRule`], [`Cidr`]): a string, or for the numbers and sizes a
//! TOML integer. `proxy-protocol` and `rehash-per-request` are booleans; `key`, `trust` and
//! `worker-command` are arrays of strings. A `[[listener]]` table has an `addr`, and may have a
//! `name` (default `l0`, `l1`, ... by position) and `key`, `fallback`, `trust`,
//! `proxy-protocol` and `rehash-per-request` of its own; what
//! it leaves out, it takes from the dispatcher-wide settings. Unknown keys are errors.
//!
//! [`FileSettings`] is what the file says, each setting `None` where it says nothing: the
//! command line ([`crate::cli`]) lays its flags over it. An error names the file, the line and
//! the key: `/etc/stickyd.toml:7: listener.addr: '1.2.3.4' is not an address:port ...`.
//!
//! ```
//! use std::path::Path;
//! use stickyd::config::FileSettings;
//!
//! let text = "workers = 2\n[[listener]]\naddr = \"127.0.0.1:0\"\nkey = [\"cookie:sid\"]\n";
//! let file = FileSettings::parse(Path::new("stickyd.toml"), text).unwrap();
//! assert_eq!(file.workers, Some(2));
//! assert_eq!(file.listeners[0].name, "l0");
//!
//! let e = FileSettings::parse(Path::new("stickyd.toml"), "workers = 2\ngrace = \"1y\"\n");
//! assert_eq!(
//!     e.unwrap_err().to_string(),
//!     "stickyd.toml:2: grace: '1y' is not a duration (e.g. 250ms, 5s, 1m)"
//! );
//! ```

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::values::{self, MAX_LISTENERS};
use super::{Backend, Ipc, ListenSpec, OnTimeout, WorkerCommand};
use crate::decide::KeyPlan;
use crate::keys::{Cidr, KeyRule, Trust};

mod error;

use error::Doc;
pub use error::FileError;

/// The largest configuration file read.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// What a configuration file says; each setting `None` where it says nothing.
#[derive(Clone, Debug, Default)]
pub struct FileSettings {
    /// `workers`.
    pub workers: Option<u32>,
    /// `threads`.
    pub threads: Option<u32>,
    /// `peek-timeout`.
    pub peek_timeout: Option<Duration>,
    /// `on-timeout`.
    pub on_timeout: Option<OnTimeout>,
    /// `max-peek`.
    pub max_peek: Option<usize>,
    /// `grace`.
    pub grace: Option<Duration>,
    /// `start-timeout`.
    pub start_timeout: Option<Duration>,
    /// `respawn-hold`.
    pub respawn_hold: Option<Duration>,
    /// `metrics`.
    pub metrics: Option<SocketAddr>,
    /// `max-queue`.
    pub max_queue: Option<u32>,
    /// `backend`.
    pub backend: Option<Backend>,
    /// `ipc`.
    pub ipc: Option<Ipc>,
    /// The dispatcher-wide `key`, `fallback` and `trust`.
    pub rules: RuleSettings,
    /// The dispatcher-wide `proxy-protocol`.
    pub proxy_protocol: Option<bool>,
    /// The dispatcher-wide `rehash-per-request`.
    pub rehash_per_request: Option<bool>,
    /// `worker-command`: the program, then its arguments.
    pub worker_command: Option<WorkerCommand>,
    /// The `[[listener]]` tables, in order.
    pub listeners: Vec<FileListener>,
}

/// Key rules as the file (or the command line) gives them, each part `None` when not given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSettings {
    /// `key`: the key rules, in order (never empty).
    pub keys: Option<Vec<KeyRule>>,
    /// `fallback`: the rule used when no key rule yields a key.
    pub fallback: Option<KeyRule>,
    /// `trust`: the trusted proxy networks (may be empty: trust none).
    pub trust: Option<Vec<Cidr>>,
}

impl RuleSettings {
    /// Whether no part is given.
    pub fn is_empty(&self) -> bool {
        self.keys.is_none() && self.fallback.is_none() && self.trust.is_none()
    }

    /// These settings, each part not given here taken from `other`.
    pub fn or(self, other: RuleSettings) -> RuleSettings {
        RuleSettings {
            keys: self.keys.or(other.keys),
            fallback: self.fallback.or(other.fallback),
            trust: self.trust.or(other.trust),
        }
    }

    /// The key plan these settings make, each part not given here taken from `base`.
    pub fn plan(&self, base: &KeyPlan) -> KeyPlan {
        let rules = self.keys.clone().unwrap_or_else(|| base.rules().to_vec());
        let fallback = self
            .fallback
            .clone()
            .unwrap_or_else(|| base.fallback().clone());
        let trust = self
            .trust
            .clone()
            .map_or_else(|| base.trust().clone(), Trust::new);
        KeyPlan::new(rules, fallback).with_trust(trust)
    }
}

/// One `[[listener]]` table.
#[derive(Clone, Debug)]
pub struct FileListener {
    /// `name`, or `lN` for the listener at index N.
    pub name: String,
    /// `addr`.
    pub addr: SocketAddr,
    /// The listener's own `key`, `fallback` and `trust`.
    pub rules: RuleSettings,
    /// The listener's own `proxy-protocol`.
    pub proxy_protocol: Option<bool>,
    /// The listener's own `rehash-per-request`.
    pub rehash_per_request: Option<bool>,
}

impl FileListener {
    /// The listener to open: with a key plan of its own, its rules over the dispatcher-wide
    /// plan `wide`, when it gives any rule; following the dispatcher otherwise.
    pub fn into_spec(self, wide: &KeyPlan) -> ListenSpec {
        ListenSpec {
            plan: (!self.rules.is_empty()).then(|| self.rules.plan(wide)),
            proxy_protocol: self.proxy_protocol,
            rehash_per_request: self.rehash_per_request,
            name: self.name,
            addr: self.addr,
        }
    }
}

impl FileSettings {
    /// Reads and parses the configuration file at `path`.
    pub fn load(path: &Path) -> Result<FileSettings, FileError> {
        let read = |source| FileError::Read {
            path: path.to_owned(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes))
            .map_err(read)?;
        if bytes.len() as u64 > MAX_FILE_SIZE {
            return Err(FileError::TooLarge {
                path: path.to_owned(),
            });
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| read(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        FileSettings::parse(path, &text)
    }

    /// Parses the text of a configuration file; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<FileSettings, FileError> {
        let doc = Doc { path, text };
        let raw: RawFile = toml::from_str(text).map_err(|e| doc.toml_error(&e))?;
        raw.resolve(&doc)
    }
}

/// A setting's value as its flag would take it: a TOML string, or an integer as its digits.
#[derive(Debug)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A scalar setting, with where it is.
type Value = Spanned<Text>;

/// The file as TOML gives it: types checked, values not yet parsed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    workers: Option<Value>,
    threads: Option<Value>,
    peek_timeout: Option<Value>,
    on_timeout: Option<Value>,
    max_peek: Option<Value>,
    grace: Option<Value>,
    start_timeout: Option<Value>,
    respawn_hold: Option<Value>,
    metrics: Option<Value>,
    max_queue: Option<Value>,
    backend: Option<Value>,
    ipc: Option<Value>,
    key: Option<Spanned<Vec<Value>>>,
    fallback: Option<Value>,
    trust: Option<Vec<Value>>,
    proxy_protocol: Option<bool>,
    rehash_per_request: Option<bool>,
    worker_command: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    listener: Vec<Spanned<RawListener>>,
}

/// One `[[listener]]` table as TOML gives it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawListener {
    name: Option<Value>,
    addr: Value,
    key: Option<Spanned<Vec<Value>>>,
    fallback: Option<Value>,
    trust: Option<Vec<Value>>,
    proxy_protocol: Option<bool>,
    rehash_per_request: Option<bool>,
}

impl Doc<'_> {
    /// Parses `value` (named `key`) with a flag's parser.
    fn parse_one<T, E: fmt::Display>(
        &self,
        key: &str,
        value: &Value,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<T, FileError> {
        parse(&value.get_ref().0).map_err(|e| self.error(value.span(), key, e))
    }

    /// Parses `value`, when given, with a flag's parser.
    fn parse<T, E: fmt::Display>(
        &self,
        key: &str,
        value: Option<Value>,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Option<T>, FileError> {
        value.map(|v| self.parse_one(key, &v, &parse)).transpose()
    }

    /// Parses each element of an array.
    fn parse_all<T, E: fmt::Display>(
        &self,
        key: &str,
        values: &[Value],
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Vec<T>, FileError> {
        values
            .iter()
            .map(|v| self.parse_one(key, v, &parse))
            .collect()
    }

    /// `key`, `fallback` and `trust`, under `prefix` (`""` or `"listener."`).
    fn rules(
        &self,
        prefix: &str,
        key: Option<Spanned<Vec<Value>>>,
        fallback: Option<Value>,
        trust: Option<Vec<Value>>,
    ) -> Result<RuleSettings, FileError> {
        let key_name = format!("{prefix}key");
        let keys = match key {
            Some(list) if list.get_ref().is_empty() => {
                return Err(self.error(list.span(), &key_name, "give at least one rule"));
            }
            Some(list) => Some(self.parse_all(&key_name, list.get_ref(), str::parse)?),
            None => None,
        };
        Ok(RuleSettings {
            keys,
            fallback: self.parse(&format!("{prefix}fallback"), fallback, str::parse)?,
            trust: trust
                .map(|list| self.parse_all(&format!("{prefix}trust"), &list, str::parse))
                .transpose()?,
        })
    }
}

impl RawFile {
    fn resolve(self, doc: &Doc<'_>) -> Result<FileSettings, FileError> {
        let mut file = FileSettings {
            workers: doc.parse("workers", self.workers, values::parse_workers)?,
            threads: doc.parse("threads", self.threads, values::parse_threads)?,
            peek_timeout: doc.parse(
                "peek-timeout",
                self.peek_timeout,
                values::parse_positive_duration,
            )?,
            on_timeout: doc.parse("on-timeout", self.on_timeout, values::parse_choice)?,
            max_peek: doc.parse("max-peek", self.max_peek, values::parse_max_peek)?,
            grace: doc.parse("grace", self.grace, values::parse_duration)?,
            start_timeout: doc.parse(
                "start-timeout",
                self.start_timeout,
                values::parse_positive_duration,
            )?,
            respawn_hold: doc.parse("respawn-hold", self.respawn_hold, values::parse_duration)?,
            metrics: doc.parse("metrics", self.metrics, values::parse_addr)?,
            max_queue: doc.parse("max-queue", self.max_queue, values::parse_max_queue)?,
            backend: doc.parse("backend", self.backend, values::parse_choice)?,
            ipc: doc.parse("ipc", self.ipc, values::parse_choice)?,
            rules: doc.rules("", self.key, self.fallback, self.trust)?,
            proxy_protocol: self.proxy_protocol,
            rehash_per_request: self.rehash_per_request,
            worker_command: self
                .worker_command
                .map(|words| worker_command(doc, words))
                .transpose()?,
            listeners: Vec::with_capacity(self.listener.len()),
        };
        if let Some(extra) = self.listener.get(MAX_LISTENERS) {
            let message = format!("more than {MAX_LISTENERS} listeners");
            return Err(doc.error(extra.span(), "listener", message));
        }
        let mut names = HashSet::new();
        for (i, table) in self.listener.into_iter().enumerate() {
            let (listener, named) = table.into_inner().resolve(doc, i)?;
            if !names.insert(listener.name.clone()) {
                let message = if *named.get_ref() {
                    format!("the name '{}' is used twice", listener.name)
                } else {
                    format!(
                        "this listener's default name '{}' is already used: name it",
                        listener.name
                    )
                };
                return Err(doc.error(named.span(), "listener.name", message));
            }
            file.listeners.push(listener);
        }
        Ok(file)
    }
}

/// `worker-command`: the program, then its arguments.
fn worker_command(doc: &Doc<'_>, words: Spanned<Vec<String>>) -> Result<WorkerCommand, FileError> {
    let span = words.span();
    let mut words = words.into_inner().into_iter().map(OsString::from);
    let program = words
        .next()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| doc.error(span, "worker-command", "name a program first"))?;
    Ok(WorkerCommand {
        program,
        args: words.collect(),
    })
}

impl RawListener {
    /// The listener at `index`, and where its name is: its `name` value, or, when it has
    /// none and takes the default, its `addr`.
    fn resolve(
        self,
        doc: &Doc<'_>,
        index: usize,
    ) -> Result<(FileListener, Spanned<bool>), FileError> {
        let addr = doc.parse_one("listener.addr", &self.addr, values::parse_addr)?;
        let (name, named) = match self.name {
            Some(name) => {
                values::check_listener_name(&name.get_ref().0)
                    .map_err(|e| doc.error(name.span(), "listener.name", e))?;
                let span = name.span();
                (name.into_inner().0, Spanned::new(span, true))
            }
            None => (format!("l{index}"), Spanned::new(self.addr.span(), false)),
        };
        let listener = FileListener {
            name,
            addr,
            rules: doc.rules("listener.", self.key, self.fallback, self.trust)?,
            proxy_protocol: self.proxy_protocol,
            rehash_per_request: self.rehash_per_request,
        };
        Ok((listener, named))
    }
}

#[cfg(test)]
mod tests;
