//! The per-connection decision: from the bytes peeked so far to a key hash, or "peek again".
//!
//! [`KeyPlan::decide`] is pure: it reads the peeked bytes and the peer address and allocates
//! nothing. The caller peeks again on [`Decision::NeedMore`] and passes `fin = true` once the
//! bytes cannot grow or it stops waiting (the client closed or half-closed, `--max-peek` was
//! reached, or the peek deadline passed); then the answer is always a route.
//!
//! Rules are tried in order. A rule that finds a key routes; a rule that finds none hands over
//! to the next; a rule that cannot tell yet (its header cut short) waits for more bytes, or,
//! once `fin`, counts as finding none. When no rule yields a key, the fallback rule is applied
//! to the same bytes (also waiting for more bytes while it cannot tell and `fin` is false), and
//! when even the fallback yields nothing, the peer address is the key.
//!
//! A decision made on a prefix of the request is never revised by more bytes: whenever
//! `decide(prefix, false)` routes, `decide(whole, true)` routes the same way.
//!
//! ```
//! use std::net::IpAddr;
//! use stickyd::decide::{Decision, KeyPlan};
//!
//! let plan = KeyPlan::new(vec!["header:x-session".parse().unwrap()], "ip".parse().unwrap());
//! let peer: IpAddr = "127.0.0.1".parse().unwrap();
//! let head = b"GET / HTTP/1.1\r\nX-Session: abc\r\n\r\n";
//! assert_eq!(plan.decide(&head[..20], peer, false), Decision::NeedMore);
//! assert!(matches!(plan.decide(head, peer, false), Decision::Route { fallback: false, .. }));
//! assert!(matches!(plan.decide(b"GET /", peer, true), Decision::Route { fallback: true, .. }));
//! ```

use std::net::IpAddr;

use crate::keys::{Found, Key, KeyRule};
use crate::route::key_hash;

/// The key rules of a listener, in order, and the fallback rule.
#[derive(Clone, Debug)]
pub struct KeyPlan {
    rules: Vec<KeyRule>,
    fallback: KeyRule,
}

/// What to do with a connection, given what was peeked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Route by this key hash. `fallback` = true when it came from the fallback rule (or the
    /// last-resort peer address), for logs and a later metric.
    Route {
        /// The key's hash, for rendezvous routing.
        hash: u64,
        /// Whether no key rule yielded the key.
        fallback: bool,
    },
    /// A rule is Partial and the bytes can still grow: peek again.
    NeedMore,
}

impl KeyPlan {
    /// A plan trying `rules` in order, then `fallback`. The command line guarantees `rules` is
    /// non-empty; if it is empty, the plan behaves as `[ip]`.
    pub fn new(rules: Vec<KeyRule>, fallback: KeyRule) -> KeyPlan {
        let rules = if rules.is_empty() {
            vec![KeyRule::Ip]
        } else {
            rules
        };
        KeyPlan { rules, fallback }
    }

    /// The key rules, in the order they are tried.
    pub fn rules(&self) -> &[KeyRule] {
        &self.rules
    }

    /// The rule applied when no key rule yields a key.
    pub fn fallback(&self) -> &KeyRule {
        &self.fallback
    }

    /// True when the first rule is `ip`: route at accept time, without peeking.
    pub fn routes_at_accept(&self) -> bool {
        matches!(self.rules.first(), Some(KeyRule::Ip))
    }

    /// Decide from the bytes peeked so far. `fin` = the bytes cannot grow or we stop waiting
    /// (client closed/half-closed, `--max-peek` reached, peek deadline): then Partial counts as
    /// Absent and the answer is never `NeedMore`.
    ///
    /// Rules in order: Key -> Route; Absent -> next; Partial -> `NeedMore` unless `fin`. All
    /// Absent -> the fallback rule on the same bytes, the same way (Partial -> `NeedMore` unless
    /// `fin`, so that a prefix never routes differently from the whole request) ->
    /// `Route { fallback: true }`; fallback Absent -> the peer address,
    /// `Route { fallback: true }`.
    pub fn decide(&self, bytes: &[u8], peer: IpAddr, fin: bool) -> Decision {
        for rule in &self.rules {
            match rule.extract(bytes, peer) {
                Found::Key(key) => return route(key, false),
                Found::Partial if !fin => return Decision::NeedMore,
                Found::Partial | Found::Absent => {}
            }
        }
        match self.fallback.extract(bytes, peer) {
            Found::Key(key) => route(key, true),
            Found::Partial if !fin => Decision::NeedMore,
            Found::Partial | Found::Absent => route(Key::Addr(peer), true),
        }
    }
}

fn route(key: Key<'_>, fallback: bool) -> Decision {
    Decision::Route {
        hash: key_hash(key),
        fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));

    fn rule(text: &str) -> KeyRule {
        text.parse().unwrap()
    }

    fn plan(rules: &[&str], fallback: &str) -> KeyPlan {
        KeyPlan::new(rules.iter().map(|r| rule(r)).collect(), rule(fallback))
    }

    fn routed(key: Key<'_>, fallback: bool) -> Decision {
        Decision::Route {
            hash: key_hash(key),
            fallback,
        }
    }

    #[test]
    fn first_rule_with_a_key_wins() {
        let plan = plan(&["header:x-session", "header:x-forwarded-for"], "ip");
        let head = b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nX-Session: s1\r\n\r\n";
        assert_eq!(
            plan.decide(head, PEER, false),
            routed(Key::Bytes(b"s1"), false)
        );
        let head = b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";
        let client = Key::Addr("10.0.0.1".parse().unwrap());
        assert_eq!(plan.decide(head, PEER, false), routed(client, false));
    }

    #[test]
    fn an_earlier_partial_rule_waits_unless_fin() {
        let plan = plan(&["header:x-session", "header:x-forwarded-for"], "ip");
        let head = b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nX-Sess";
        assert_eq!(plan.decide(head, PEER, false), Decision::NeedMore);
        let client = Key::Addr("10.0.0.1".parse().unwrap());
        assert_eq!(plan.decide(head, PEER, true), routed(client, false));
    }

    #[test]
    fn fallback_rule_then_peer() {
        let plan = plan(&["header:x-session"], "header:x-forwarded-for");
        let head = b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";
        let client = Key::Addr("10.0.0.1".parse().unwrap());
        assert_eq!(plan.decide(head, PEER, false), routed(client, true));
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            plan.decide(head, PEER, false),
            routed(Key::Addr(PEER), true)
        );
        assert_eq!(plan.decide(b"", PEER, true), routed(Key::Addr(PEER), true));
        assert_eq!(plan.decide(b"GET / HT", PEER, false), Decision::NeedMore);
    }

    #[test]
    fn a_partial_fallback_waits_unless_fin() {
        let plan = plan(&["header:x-session"], "header:x-forwarded-for");
        let head = b"GET / HTTP/1.1\r\nX-Session:\r\nX-Forwarded-For: 10.0.0.1";
        assert_eq!(plan.decide(head, PEER, false), Decision::NeedMore);
        assert_eq!(plan.decide(head, PEER, true), routed(Key::Addr(PEER), true));
    }

    #[test]
    fn ip_plans() {
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let client = Key::Addr("10.0.0.1".parse().unwrap());
        let ip = plan(&["ip"], "ip");
        assert!(ip.routes_at_accept());
        assert_eq!(ip.decide(b"", mapped, false), routed(client, false));
        let empty = KeyPlan::new(Vec::new(), rule("header:x-session"));
        assert_eq!(empty.rules(), [KeyRule::Ip]);
        assert_eq!(empty.fallback(), &rule("header:x-session"));
        assert!(empty.routes_at_accept());
        let header_first = plan(&["header:x-session", "ip"], "ip");
        assert!(!header_first.routes_at_accept());
        assert_eq!(header_first.decide(b"", PEER, false), Decision::NeedMore);
        assert_eq!(
            header_first.decide(b"GET / HTTP/1.1\r\n\r\n", PEER, false),
            routed(Key::Addr(PEER), false)
        );
    }

    #[test]
    fn the_peer_of_last_resort_is_folded() {
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let client = Key::Addr("10.0.0.1".parse().unwrap());
        let plan = plan(&["header:x-session"], "header:x-session");
        assert_eq!(plan.decide(b"", mapped, true), routed(client, true));
    }

    // ---- Property tests against a naive reference ----

    const RULES: [&str; 6] = [
        "ip",
        "header:x-session",
        "header:X-Forwarded-For",
        "header:host",
        "header:cookie",
        "header:x-real-ip",
    ];

    /// The obvious header lookup, with Strings: the first field named `name` (any case),
    /// trimmed, in a complete request head.
    fn reference_header(head: &str, name: &str) -> Option<String> {
        for line in head.split('\n').skip(1) {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                return None;
            }
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            if field.is_empty() || field.ends_with([' ', '\t']) {
                continue;
            }
            if field.to_lowercase() == name.to_lowercase() {
                return Some(value.trim_matches([' ', '\t']).to_owned());
            }
        }
        None
    }

    /// The obvious address reading: `addr`, `addr:port`, `[v6]`, `[v6]:port`.
    fn reference_addr(element: &str) -> Option<IpAddr> {
        if let Some(rest) = element.strip_prefix('[') {
            let (inner, after) = rest.split_once(']')?;
            let v6: Ipv6Addr = inner.parse().ok()?;
            let port_ok = after.is_empty()
                || after
                    .strip_prefix(':')
                    .is_some_and(|p| p.parse::<u16>().is_ok());
            return port_ok.then_some(IpAddr::V6(v6));
        }
        if let Ok(ip) = element.parse::<IpAddr>() {
            return Some(ip);
        }
        let (host, port) = element.split_once(':')?;
        port.parse::<u16>().ok()?;
        host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    }

    enum RefKey {
        Addr(IpAddr),
        Bytes(String),
    }

    fn reference_rule(rule: &str, head: &str, peer: IpAddr) -> Option<RefKey> {
        if rule == "ip" {
            return Some(RefKey::Addr(peer));
        }
        let name = rule.strip_prefix("header:").unwrap().to_lowercase();
        let value = reference_header(head, &name)?;
        if name != "x-forwarded-for" {
            return (!value.is_empty()).then_some(RefKey::Bytes(value));
        }
        let element = value
            .split(',')
            .map(|e| e.trim_matches([' ', '\t']))
            .find(|e| !e.is_empty() && e.to_lowercase() != "unknown")?;
        Some(match reference_addr(element) {
            Some(ip) => RefKey::Addr(ip),
            None => RefKey::Bytes(element.to_owned()),
        })
    }

    fn reference_decide(rules: &[&str], fallback: &str, head: &str, peer: IpAddr) -> Decision {
        let hash = |key: RefKey| match key {
            RefKey::Addr(ip) => key_hash(Key::Addr(crate::keys::fold_addr(ip))),
            RefKey::Bytes(bytes) => key_hash(Key::Bytes(bytes.as_bytes())),
        };
        if let Some(key) = rules.iter().find_map(|r| reference_rule(r, head, peer)) {
            return Decision::Route {
                hash: hash(key),
                fallback: false,
            };
        }
        let key = reference_rule(fallback, head, peer).unwrap_or(RefKey::Addr(peer));
        Decision::Route {
            hash: hash(key),
            fallback: true,
        }
    }

    fn xff_value() -> impl Strategy<Value = String> {
        let element = prop::sample::select(vec![
            "10.0.0.1",
            "192.0.2.7:8080",
            "[2001:db8::1]:443",
            "[2001:db8::2]",
            "2001:db8::3",
            "::ffff:10.0.0.1",
            "[::ffff:10.0.0.2]:80",
            "unknown",
            "UNKNOWN",
            "",
            "_hidden",
            "1.2.3.4:99999",
        ]);
        (prop::collection::vec((element, "[ \t]{0,2}"), 0..4)).prop_map(|parts| {
            let parts: Vec<String> = parts
                .into_iter()
                .map(|(e, ws)| format!("{ws}{e}{ws}"))
                .collect();
            parts.join(",")
        })
    }

    fn field_line() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec![
            "Host",
            "X-Session",
            "x-session",
            "X-SESSION",
            "X-Forwarded-For",
            "x-forwarded-for",
            "X-Real-IP",
            "Cookie",
            "Accept",
            "X-Sessions",
            "X-Sessio",
        ]);
        let shape = prop::sample::select(vec![
            "{n}:{v}",
            "{n}: {v}",
            "{n} : {v}",
            " {n}: {v}",
            "{n} {v}",
            ":{v}",
        ]);
        let value = prop_oneof!["[ \t]{0,2}[a-zA-Z0-9.:_-]{0,12}[ \t]{0,2}", xff_value()];
        (name, shape, value, any::<bool>()).prop_map(|(name, shape, value, crlf)| {
            let line = shape.replace("{n}", name).replace("{v}", &value);
            format!("{line}{}", if crlf { "\r\n" } else { "\n" })
        })
    }

    /// A complete request head (and maybe a body that must not be read).
    fn request() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(field_line(), 0..8),
            any::<bool>(),
            "[a-z:\r\n ]{0,16}",
        )
            .prop_map(|(lines, crlf, body)| {
                let eol = if crlf { "\r\n" } else { "\n" };
                format!("GET /a?b=c HTTP/1.1{eol}{}{eol}{body}", lines.concat())
            })
    }

    fn rules() -> impl Strategy<Value = (Vec<&'static str>, &'static str)> {
        (
            prop::collection::vec(prop::sample::select(RULES.to_vec()), 1..4),
            prop::sample::select(RULES.to_vec()),
        )
    }

    fn peer() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::V4(Ipv4Addr::new(127, a, b, c))),
            Just("::1".parse().unwrap()),
            Just("::ffff:127.0.0.3".parse().unwrap()),
        ]
    }

    /// Arbitrary bytes, with pieces of HTTP mixed in so the scan goes deep.
    fn noise() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..8),
            prop::sample::select(vec![
                &b"\r\n"[..],
                b"\n",
                b":",
                b"X-Session:",
                b"x-forwarded-for: ",
                b"unknown,",
                b"[2001:db8::1]:",
                b"10.0.0.1",
                b"\r\n\r\n",
            ])
            .prop_map(<[u8]>::to_vec),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn never_panics_and_fin_always_routes(bytes in noise(), (rules, fallback) in rules(), peer in peer()) {
            let plan = plan(&rules, fallback);
            let _ = plan.decide(&bytes, peer, false);
            let is_route = matches!(plan.decide(&bytes, peer, true), Decision::Route { .. });
            prop_assert!(is_route);
        }

        #[test]
        fn matches_the_reference(head in request(), (rules, fallback) in rules(), peer in peer()) {
            let plan = plan(&rules, fallback);
            let expected = reference_decide(&rules, fallback, &head, peer);
            prop_assert_eq!(plan.decide(head.as_bytes(), peer, true), expected);
            prop_assert_eq!(plan.decide(head.as_bytes(), peer, false), expected);
        }

        #[test]
        fn a_prefix_never_routes_differently(head in request(), (rules, fallback) in rules(), peer in peer()) {
            let plan = plan(&rules, fallback);
            let whole = plan.decide(head.as_bytes(), peer, true);
            for cut in 0..head.len() {
                let early = plan.decide(&head.as_bytes()[..cut], peer, false);
                prop_assert!(early == Decision::NeedMore || early == whole, "cut {}: {:?} vs {:?}", cut, early, whole);
            }
        }
    }
}
