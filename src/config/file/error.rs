//! Errors of the configuration file, placed: the line from a byte offset, and the dotted key
//! (`listener.addr`) from the document's spans.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::MAX_FILE_SIZE;

/// A configuration file that cannot be read or says something wrong.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading the file failed.
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file is larger than [`MAX_FILE_SIZE`].
    #[error("{}: larger than {MAX_FILE_SIZE} bytes: not a configuration file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Not TOML, an unknown key, a value of the wrong type, or a value its parser refuses.
    #[error("{}", Located { path, line: *line, key: key.as_deref(), message })]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line, from 1, where the problem is (when known).
        line: Option<usize>,
        /// The key, dotted (`listener.addr`), when the problem is in a value.
        key: Option<String>,
        /// What is wrong, on one line.
        message: String,
    },
}

/// Writes `path:line: key: message`, leaving out what is unknown.
struct Located<'a> {
    path: &'a Path,
    line: Option<usize>,
    key: Option<&'a str>,
    message: &'a str,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The file being read, for errors that name a line.
pub(super) struct Doc<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl Doc<'_> {
    /// The line, from 1, of byte `offset`.
    fn line(&self, offset: usize) -> usize {
        let before = self
            .text
            .as_bytes()
            .get(..offset)
            .unwrap_or(self.text.as_bytes());
        1 + before.iter().filter(|&&b| b == b'\n').count()
    }

    /// An error in the value of `key`, at `span`.
    pub(super) fn error(
        &self,
        span: Range<usize>,
        key: &str,
        message: impl fmt::Display,
    ) -> FileError {
        FileError::Invalid {
            path: self.path.to_owned(),
            line: Some(self.line(span.start)),
            key: Some(key.to_owned()),
            message: one_line(&message.to_string()),
        }
    }

    /// A parse error or a deserialisation error of the toml crate, placed.
    pub(super) fn toml_error(&self, e: &toml::de::Error) -> FileError {
        let start = e.span().map(|s| s.start);
        FileError::Invalid {
            path: self.path.to_owned(),
            line: start.map(|at| self.line(at)),
            key: start.and_then(|at| key_at(self.text, at)),
            message: one_line(e.message()),
        }
    }
}

/// The dotted key (`listener.addr`) whose key or value holds byte `at` of `text`. (A table's
/// span is its header only: every entry is searched, innermost first.)
fn key_at(text: &str, at: usize) -> Option<String> {
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut path = Vec::new();
    key_in_table(doc.get_ref(), at, &mut path).then(|| path.join("."))
}

fn key_in_table(table: &DeTable<'_>, at: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        if key_in_value(value.get_ref(), at, path)
            || key.span().contains(&at)
            || value.span().contains(&at)
        {
            return true;
        }
        path.pop();
    }
    false
}

fn key_in_value(value: &DeValue<'_>, at: usize, path: &mut Vec<String>) -> bool {
    match value {
        DeValue::Table(table) => key_in_table(table, at, path),
        DeValue::Array(items) => items
            .iter()
            .any(|item| key_in_value(item.get_ref(), at, path) || item.span().contains(&at)),
        _ => false,
    }
}

/// `message` on one line.
fn one_line(message: &str) -> String {
    message.trim().replace(['\r', '\n'], " ")
}
