//! The names key rules look for, validated once at configuration time with their searches
//! prebuilt, and why a rule is refused.

use std::fmt;

use memchr::memmem::Finder;

use super::head::FieldFinder;

/// Longest header, cookie or query parameter name a rule accepts.
pub(crate) const MAX_NAME_LEN: usize = 256;

/// A validated header name, stored lowercase (RFC 9110 token characters, 1..=256 bytes).
#[derive(Clone)]
pub struct HeaderName {
    name: String,
    finder: FieldFinder,
}

impl HeaderName {
    /// Checks `name` for the rule `rule` (quoted in errors) and prepares its search.
    pub(crate) fn parse(rule: &str, name: &str) -> Result<HeaderName, RuleError> {
        check_name("header", rule, name, is_token)?;
        let name = name.to_ascii_lowercase();
        let finder = FieldFinder::new(&name);
        Ok(HeaderName { name, finder })
    }

    /// The name, lowercase.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Whether this is `x-forwarded-for`, whose value is read as an address list.
    pub fn is_x_forwarded_for(&self) -> bool {
        self.name == "x-forwarded-for"
    }

    /// The prebuilt search for this header's field lines.
    pub(crate) fn finder(&self) -> &FieldFinder {
        &self.finder
    }
}

/// A validated cookie name, matched exactly (RFC 6265 token characters, 1..=256 bytes).
#[derive(Clone)]
pub struct CookieName {
    name: String,
    /// Finds `name=` in a Cookie header value.
    pair: Finder<'static>,
}

impl CookieName {
    /// Checks `name` for the rule `rule` (quoted in errors) and prepares its search.
    pub(crate) fn parse(rule: &str, name: &str) -> Result<CookieName, RuleError> {
        check_name("cookie", rule, name, is_token)?;
        let pair = Finder::new(format!("{name}=").as_bytes()).into_owned();
        Ok(CookieName {
            name: name.to_owned(),
            pair,
        })
    }

    /// The name, as given.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The prebuilt search for `name=`.
    pub(crate) fn pair_finder(&self) -> &Finder<'static> {
        &self.pair
    }
}

/// A validated query parameter name, matched exactly and raw (visible ASCII but `&=#?`,
/// 1..=256 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct QueryName(String);

impl QueryName {
    /// Checks `name` for the rule `rule` (quoted in errors).
    pub(crate) fn parse(rule: &str, name: &str) -> Result<QueryName, RuleError> {
        check_name("query", rule, name, is_query_name_byte)?;
        Ok(QueryName(name.to_owned()))
    }

    /// The name, as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! name_traits {
    ($($ty:ident),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($ty)).field(&self.as_str()).finish()
            }
        }
    )*};
}
name_traits!(HeaderName, CookieName, QueryName);

impl PartialEq for HeaderName {
    fn eq(&self, other: &HeaderName) -> bool {
        self.name == other.name
    }
}

impl Eq for HeaderName {}

impl PartialEq for CookieName {
    fn eq(&self, other: &CookieName) -> bool {
        self.name == other.name
    }
}

impl Eq for CookieName {}

/// Why a key rule was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RuleError {
    /// Not one of the rule kinds.
    #[error("unknown key rule '{0}' (expected ip, header:NAME, cookie:NAME, query:NAME or sni)")]
    Unknown(String),
    /// `header:`, `cookie:` or `query:` without a name.
    #[error("empty {kind} name in '{rule}'")]
    EmptyName {
        /// `header`, `cookie` or `query`.
        kind: &'static str,
        /// The rule as given.
        rule: String,
    },
    /// A name with a character its kind does not allow, or too long.
    #[error("invalid {kind} name in '{rule}': {reason}")]
    InvalidName {
        /// `header`, `cookie` or `query`.
        kind: &'static str,
        /// The rule as given.
        rule: String,
        /// What is wrong with the name.
        reason: String,
    },
}

/// Checks a rule's name: non-empty, at most [`MAX_NAME_LEN`] bytes, every byte allowed.
fn check_name(
    kind: &'static str,
    rule: &str,
    name: &str,
    allowed: fn(u8) -> bool,
) -> Result<(), RuleError> {
    let invalid = |reason: String| RuleError::InvalidName {
        kind,
        rule: rule.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(RuleError::EmptyName {
            kind,
            rule: rule.to_owned(),
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(format!("longer than {MAX_NAME_LEN} bytes")));
    }
    match name.chars().find(|&c| !u8::try_from(c).is_ok_and(allowed)) {
        Some(c) => Err(invalid(format!("{c:?} is not allowed"))),
        None => Ok(()),
    }
}

/// RFC 9110 `tchar`: the characters of a header name (and of a cookie name, RFC 6265).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte a query parameter name may hold as matched raw: visible ASCII but the separators.
fn is_query_name_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"&=#?".contains(&b)
}
