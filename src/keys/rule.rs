//! [`KeyRule`]: parsing, printing and applying one key rule.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::addr::fold_addr;
use super::head::{Head, Next};
use super::names::{CookieName, HeaderName, QueryName, RuleError};
use super::request::{CustomKey, Request};
use super::trust::Trust;
use super::{Found, Key, cookie, query, tls, xff};

/// A key rule: where a connection's routing key comes from.
#[derive(Clone)]
pub enum KeyRule {
    /// The peer's address.
    Ip,
    /// The first header of this name (an address list for X-Forwarded-For).
    Header(HeaderName),
    /// The first cookie of this name across the `Cookie` headers.
    Cookie(CookieName),
    /// The first query parameter of this name in the request target.
    Query(QueryName),
    /// The server name of a TLS ClientHello.
    Sni,
    /// A function of the embedding application (see [`crate::keys::key_fn`]).
    Custom(CustomKey),
}

/// What a rule sees besides the bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Context<'t> {
    /// The effective client address.
    pub(crate) peer: IpAddr,
    /// The trusted proxy networks.
    pub(crate) trust: &'t Trust,
    /// Whether the bytes can no longer grow.
    pub(crate) fin: bool,
}

impl FromStr for KeyRule {
    type Err = RuleError;

    /// Parses `ip`, `header:NAME`, `cookie:NAME`, `query:NAME` or `sni` (never a custom rule).
    fn from_str(rule: &str) -> Result<KeyRule, RuleError> {
        match rule {
            "ip" => return Ok(KeyRule::Ip),
            "sni" => return Ok(KeyRule::Sni),
            _ => {}
        }
        let Some((kind, name)) = rule.split_once(':') else {
            return Err(RuleError::Unknown(rule.to_owned()));
        };
        match kind {
            "header" => HeaderName::parse(rule, name).map(KeyRule::Header),
            "cookie" => CookieName::parse(rule, name).map(KeyRule::Cookie),
            "query" => QueryName::parse(rule, name).map(KeyRule::Query),
            _ => Err(RuleError::Unknown(rule.to_owned())),
        }
    }
}

impl fmt::Display for KeyRule {
    /// Writes the rule as [`FromStr`] reads it (`header:NAME` with NAME lowercase), and
    /// `custom` for a custom rule.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRule::Ip => f.write_str("ip"),
            KeyRule::Header(name) => write!(f, "header:{name}"),
            KeyRule::Cookie(name) => write!(f, "cookie:{name}"),
            KeyRule::Query(name) => write!(f, "query:{name}"),
            KeyRule::Sni => f.write_str("sni"),
            KeyRule::Custom(_) => f.write_str("custom"),
        }
    }
}

impl fmt::Debug for KeyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRule::Ip => f.write_str("Ip"),
            KeyRule::Header(name) => f.debug_tuple("Header").field(name).finish(),
            KeyRule::Cookie(name) => f.debug_tuple("Cookie").field(name).finish(),
            KeyRule::Query(name) => f.debug_tuple("Query").field(name).finish(),
            KeyRule::Sni => f.write_str("Sni"),
            KeyRule::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl PartialEq for KeyRule {
    /// Rules are equal when they read the same key; custom rules when they share one function.
    fn eq(&self, other: &KeyRule) -> bool {
        match (self, other) {
            (KeyRule::Ip, KeyRule::Ip) | (KeyRule::Sni, KeyRule::Sni) => true,
            (KeyRule::Header(a), KeyRule::Header(b)) => a == b,
            (KeyRule::Cookie(a), KeyRule::Cookie(b)) => a == b,
            (KeyRule::Query(a), KeyRule::Query(b)) => a == b,
            (KeyRule::Custom(a), KeyRule::Custom(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for KeyRule {}

impl KeyRule {
    /// Whether this rule needs the request bytes (false for `ip`).
    pub fn needs_bytes(&self) -> bool {
        !matches!(self, KeyRule::Ip)
    }

    /// Applies the rule to the bytes peeked so far from a connection whose peer is `peer`,
    /// with no trusted proxies. As before the bytes stop growing: a custom rule is partial
    /// until the head is complete. ([`crate::decide::KeyPlan`] applies its rules with its trust
    /// list and `fin`.)
    pub fn extract<'a>(&self, bytes: &'a [u8], peer: IpAddr) -> Found<'a> {
        static NO_TRUST: Trust = Trust::none();
        let cx = Context {
            peer,
            trust: &NO_TRUST,
            fin: false,
        };
        self.find(&Head::new(bytes), cx)
    }

    /// Applies the rule to a request head shared by the rules of one decision.
    pub(crate) fn find<'a>(&self, head: &Head<'a>, cx: Context<'_>) -> Found<'a> {
        match self {
            KeyRule::Ip => Found::Key(Key::Addr(fold_addr(cx.peer))),
            KeyRule::Header(name) if name.is_x_forwarded_for() => {
                xff::find(head, name.finder(), cx.peer, cx.trust)
            }
            KeyRule::Header(name) => match head.next_field(name.finder(), 0) {
                Next::Field { value: [], .. } | Next::Absent => Found::Absent,
                Next::Field { value, .. } => Found::Key(Key::Bytes(value)),
                Next::Partial => Found::Partial,
            },
            KeyRule::Cookie(name) => cookie::find(head, name),
            KeyRule::Query(name) => query::find(head.bytes(), name),
            KeyRule::Sni => tls::server_name(head.bytes()),
            KeyRule::Custom(custom) => {
                let end = head.end();
                if end.is_none() && !cx.fin {
                    return Found::Partial;
                }
                let request = Request::with_end(head.bytes(), end, cx.peer);
                custom.key(&request).map_or(Found::Absent, Found::Key)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn rule(text: &str) -> KeyRule {
        text.parse().unwrap()
    }

    fn header(name: &str) -> KeyRule {
        KeyRule::Header(HeaderName::parse("header:", name).unwrap())
    }

    #[test]
    fn parses_every_rule_kind() {
        assert_eq!(rule("ip"), KeyRule::Ip);
        assert_eq!(rule("sni"), KeyRule::Sni);
        assert_eq!(rule("header:X-Session"), header("x-session"));
        assert_eq!(rule("header:x-session"), header("x-session"));
        assert_ne!(rule("header:x-session"), rule("cookie:x-session"));
        assert_ne!(rule("cookie:SID"), rule("cookie:sid"));
        assert_ne!(rule("query:SID"), rule("query:sid"));
        assert!(rule("header:X-Forwarded-For").needs_bytes());
        assert!(rule("cookie:sid").needs_bytes());
        assert!(rule("query:sid").needs_bytes());
        assert!(rule("sni").needs_bytes());
        assert!(!KeyRule::Ip.needs_bytes());
        let KeyRule::Header(name) = rule("header:X-FORWARDED-FOR") else {
            panic!("not a header rule");
        };
        assert!(name.is_x_forwarded_for());
        assert_eq!(name.as_str(), "x-forwarded-for");
        let KeyRule::Cookie(name) = rule("cookie:SID") else {
            panic!("not a cookie rule");
        };
        assert_eq!(name.as_str(), "SID");
        assert_eq!(format!("{:?}", rule("query:a")), "Query(QueryName(\"a\"))");
        assert_eq!(format!("{:?}", rule("sni")), "Sni");
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "ip",
            "sni",
            "header:x-session",
            "header:X-Forwarded-For",
            "header:a!#$%&'*+-.^_`|~9",
            "cookie:SID",
            "query:session_id",
            "query:a[b]",
        ] {
            let parsed = rule(text);
            assert_eq!(rule(&parsed.to_string()), parsed);
        }
        assert_eq!(rule("header:X-Real-IP").to_string(), "header:x-real-ip");
        assert_eq!(rule("cookie:SID").to_string(), "cookie:SID");
        assert_eq!(rule("query:Q").to_string(), "query:Q");
    }

    #[test]
    fn refuses_bad_rules_with_clear_messages() {
        let message = |text: &str| text.parse::<KeyRule>().unwrap_err().to_string();
        assert_eq!(
            message("foo"),
            "unknown key rule 'foo' (expected ip, header:NAME, cookie:NAME, query:NAME or sni)"
        );
        assert!(message("IP").starts_with("unknown key rule 'IP'"));
        assert!(message("ip:x").starts_with("unknown key rule 'ip:x'"));
        assert!(message("custom").starts_with("unknown key rule 'custom'"));
        assert!(message("sni:x").starts_with("unknown key rule 'sni:x'"));
        assert_eq!(message("header:"), "empty header name in 'header:'");
        assert_eq!(message("cookie:"), "empty cookie name in 'cookie:'");
        assert_eq!(message("query:"), "empty query name in 'query:'");
        assert_eq!(
            message("header:x y"),
            "invalid header name in 'header:x y': ' ' is not allowed"
        );
        assert!(message("header:a:b").contains("':' is not allowed"));
        assert!(message("header:é").contains("'é' is not allowed"));
        assert!(message("cookie:a=b").contains("'=' is not allowed"));
        assert!(message("cookie:a;b").contains("';' is not allowed"));
        assert!(message("query:a&b").contains("'&' is not allowed"));
        assert!(message("query:a b").contains("' ' is not allowed"));
        assert!(message(&format!("header:{}", "a".repeat(257))).contains("longer than 256"));
        assert!(
            format!("header:{}", "a".repeat(256))
                .parse::<KeyRule>()
                .is_ok()
        );
    }

    #[test]
    fn ip_is_the_folded_peer() {
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(KeyRule::Ip.extract(b"", mapped), Found::Key(Key::Addr(v4)));
        assert_eq!(
            KeyRule::Ip.extract(b"GET", PEER),
            Found::Key(Key::Addr(PEER))
        );
    }

    #[test]
    fn header_rule_values() {
        let session = rule("header:x-session");
        let found = |head: &'static [u8]| session.extract(head, PEER);
        let key = |value: &'static [u8]| Found::Key(Key::Bytes(value));
        assert_eq!(
            found(b"GET / HTTP/1.1\r\nX-SESSION: \tabc \r\n\r\n"),
            key(b"abc")
        );
        assert_eq!(
            found(b"GET / HTTP/1.1\r\nx-session: a\r\nX-Session: b\r\n\r\n"),
            key(b"a")
        );
        assert_eq!(
            found(b"GET / HTTP/1.1\r\nX-Session: \r\nX-Session: b\r\n\r\n"),
            Found::Absent
        );
        assert_eq!(found(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Found::Absent);
        assert_eq!(found(b"GET / HTTP/1.1\r\nX-Session: abc"), Found::Partial);
        // Another header's value is bytes, even when it reads as an address.
        let real_ip = rule("header:x-real-ip");
        let head = b"GET / HTTP/1.1\r\nX-Real-IP: 10.0.0.1\r\n\r\n";
        assert_eq!(real_ip.extract(head, PEER), key(b"10.0.0.1"));
    }

    #[test]
    fn x_forwarded_for_rule_values() {
        let xff = rule("header:X-Forwarded-For");
        let addr = |text: &str| Found::Key(Key::Addr(text.parse().unwrap()));
        let found = |head: &'static [u8]| xff.extract(head, PEER);
        let head = b"GET / HTTP/1.1\r\nx-forwarded-for: unknown, ::ffff:10.0.0.1:80\r\n\r\n";
        assert_eq!(found(head), Found::Key(Key::Bytes(b"::ffff:10.0.0.1:80")));
        let head = b"GET / HTTP/1.1\r\nX-Forwarded-For: , [::ffff:10.0.0.1]:80, 1.1.1.1\r\n\r\n";
        assert_eq!(found(head), addr("10.0.0.1"));
        let head =
            b"GET / HTTP/1.1\r\nX-Forwarded-For: unknown\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n";
        assert_eq!(found(head), Found::Absent);
        let head = b"GET / HTTP/1.1\nX-Forwarded-For: 2001:db8::1\n\n";
        assert_eq!(found(head), addr("2001:db8::1"));
        let head = b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2";
        assert_eq!(found(head), Found::Partial);
    }

    #[test]
    fn a_split_header_is_partial_until_complete() {
        let xff = rule("header:x-forwarded-for");
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 192.0.2.1, 10.0.0.1\r\n\r\n";
        let complete = head.len() - 2;
        let key = Found::Key(Key::Addr("192.0.2.1".parse().unwrap()));
        for cut in 0..=head.len() {
            let expected = if cut < complete { Found::Partial } else { key };
            assert_eq!(xff.extract(&head[..cut], PEER), expected, "cut at {cut}");
        }
    }

    #[test]
    fn cookie_and_query_rules() {
        let head = b"GET /a?sid=q1&x=2 HTTP/1.1\r\nCookie: x=1; sid=c1\r\n\r\n";
        let key = |value: &'static [u8]| Found::Key(Key::Bytes(value));
        assert_eq!(rule("cookie:sid").extract(head, PEER), key(b"c1"));
        assert_eq!(rule("query:sid").extract(head, PEER), key(b"q1"));
        assert_eq!(rule("query:x").extract(&head[..18], PEER), key(b"2"));
        assert_eq!(rule("cookie:y").extract(head, PEER), Found::Absent);
    }

    #[test]
    fn sni_reads_the_client_hello() {
        // Not TLS: no server name, whatever the other parser makes of the rest.
        assert_ne!(
            rule("sni").extract(b"GET / HTTP/1.1\r\n\r\n", PEER),
            Found::Key(Key::Bytes(b"GET"))
        );
    }

    #[test]
    fn custom_rules_wait_for_the_head_unless_fin() {
        let custom = crate::keys::key_fn(|request| match request.header("x-token") {
            Some(token) => Some(Key::Bytes(token)),
            None if !request.complete() => Some(Key::Bytes(b"incomplete")),
            None => None,
        });
        let head = b"GET / HTTP/1.1\r\nX-Token: t\r\n\r\n";
        static NO_TRUST: Trust = Trust::none();
        let cx = |fin| Context {
            peer: PEER,
            trust: &NO_TRUST,
            fin,
        };
        let find = |bytes: &'static [u8], fin| custom.find(&Head::new(bytes), cx(fin));
        assert_eq!(find(head, false), Found::Key(Key::Bytes(b"t")));
        assert_eq!(find(&head[..20], false), Found::Partial);
        assert_eq!(
            find(&head[..20], true),
            Found::Key(Key::Bytes(b"incomplete"))
        );
        assert_eq!(find(b"GET / HTTP/1.1\r\n\r\n", true), Found::Absent);
    }
}
