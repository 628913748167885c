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
//! The plan also carries the trusted proxy networks ([`KeyPlan::with_trust`]): the peer given
//! to `decide` is the effective client address (with the PROXY protocol, the one its header
//! carries), and X-Forwarded-For is believed only from a trusted one.
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

use crate::keys::{Context, Found, Head, Key, KeyRule, Trust};
use crate::route::key_hash;

/// The key rules of a listener, in order, the fallback rule, and the trusted proxies.
#[derive(Clone, Debug)]
pub struct KeyPlan {
    rules: Vec<KeyRule>,
    fallback: KeyRule,
    trust: Trust,
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
    /// A plan trying `rules` in order, then `fallback`, with no trusted proxies. The command
    /// line guarantees `rules` is non-empty; if it is empty, the plan behaves as `[ip]`.
    pub fn new(rules: Vec<KeyRule>, fallback: KeyRule) -> KeyPlan {
        let rules = if rules.is_empty() {
            vec![KeyRule::Ip]
        } else {
            rules
        };
        KeyPlan {
            rules,
            fallback,
            trust: Trust::none(),
        }
    }

    /// The same plan, believing X-Forwarded-For only from peers in `trust` (and reading it as
    /// the rightmost untrusted element); an empty list restores the default.
    pub fn with_trust(self, trust: Trust) -> KeyPlan {
        KeyPlan { trust, ..self }
    }

    /// The trusted proxy networks (empty without `--trust`).
    pub fn trust(&self) -> &Trust {
        &self.trust
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

    /// True when any rule or the fallback reads the request bytes.
    pub fn needs_request(&self) -> bool {
        self.rules.iter().any(KeyRule::needs_bytes) || self.fallback.needs_bytes()
    }

    /// Decide from the bytes peeked so far, from the effective client address `peer`. `fin` =
    /// the bytes cannot grow or we stop waiting (client closed/half-closed, `--max-peek`
    /// reached, peek deadline): then Partial counts as Absent (a custom rule runs on what
    /// arrived) and the answer is never `NeedMore`.
    ///
    /// Rules in order: Key -> Route; Absent -> next; Partial -> `NeedMore` unless `fin`. All
    /// Absent -> the fallback rule on the same bytes, the same way (Partial -> `NeedMore` unless
    /// `fin`, so that a prefix never routes differently from the whole request) ->
    /// `Route { fallback: true }`; fallback Absent -> the peer address,
    /// `Route { fallback: true }`.
    pub fn decide(&self, bytes: &[u8], peer: IpAddr, fin: bool) -> Decision {
        let head = Head::new(bytes);
        let cx = Context {
            peer,
            trust: &self.trust,
            fin,
        };
        for rule in &self.rules {
            match rule.find(&head, cx) {
                Found::Key(key) => return route(key, false),
                Found::Partial if !fin => return Decision::NeedMore,
                Found::Partial | Found::Absent => {}
            }
        }
        match self.fallback.find(&head, cx) {
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

    #[test]
    fn trust_governs_x_forwarded_for_only() {
        let trust = Trust::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let plan = plan(&["header:x-forwarded-for", "cookie:sid"], "ip").with_trust(trust);
        assert!(!plan.trust().is_empty());
        let head =
            b"GET / HTTP/1.1\r\nX-Forwarded-For: 192.0.2.1, 10.0.0.1\r\nCookie: sid=s\r\n\r\n";
        let client = Key::Addr("10.0.0.1".parse().unwrap());
        assert_eq!(plan.decide(head, PEER, false), routed(client, false));
        // From an untrusted peer the header is ignored, the cookie still counts.
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(
            plan.decide(head, stranger, false),
            routed(Key::Bytes(b"s"), false)
        );
        // All X-Forwarded-For headers are needed: wait for the end of the head.
        assert_eq!(plan.decide(&head[..50], PEER, false), Decision::NeedMore);
        assert_eq!(
            plan.decide(&head[..50], stranger, false),
            Decision::NeedMore
        );
        assert!(KeyPlan::new(vec![], KeyRule::Ip).trust().is_empty());
    }

    #[test]
    fn needs_request_when_any_rule_reads_bytes() {
        assert!(!plan(&["ip"], "ip").needs_request());
        assert!(plan(&["ip"], "cookie:sid").needs_request());
        assert!(plan(&["query:sid", "ip"], "ip").needs_request());
        assert!(plan(&["sni"], "ip").needs_request());
        let custom = crate::keys::key_fn(|_| None);
        assert!(KeyPlan::new(vec![custom], KeyRule::Ip).needs_request());
    }

    #[test]
    fn a_custom_rule_runs_on_the_whole_head_or_at_fin() {
        let custom = crate::keys::key_fn(|request| {
            let token = request.path().strip_prefix(b"/u/")?;
            Some(Key::Bytes(token)).filter(|_| request.complete())
        });
        let plan = KeyPlan::new(vec![custom], KeyRule::Ip);
        let head = b"GET /u/ann HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            plan.decide(head, PEER, false),
            routed(Key::Bytes(b"ann"), false)
        );
        assert_eq!(plan.decide(&head[..25], PEER, false), Decision::NeedMore);
        assert_eq!(
            plan.decide(&head[..25], PEER, true),
            routed(Key::Addr(PEER), true)
        );
    }

    // ---- Property tests against a naive reference ----

    const RULES: [&str; 11] = [
        "ip",
        "header:x-session",
        "header:X-Forwarded-For",
        "header:host",
        "header:cookie",
        "header:x-real-ip",
        "cookie:sid",
        "cookie:SID",
        "cookie:a",
        "query:sid",
        "query:q",
    ];

    /// Trust lists: none, the test peers' network, a network of X-Forwarded-For elements.
    const TRUSTS: [&[&str]; 4] = [
        &[],
        &["127.0.0.0/8", "::1"],
        &["127.0.0.0/8", "10.0.0.0/8", "2001:db8::/64"],
        &["10.0.0.0/8"],
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

    /// Every field named `name` (any case), trimmed, in a complete request head, in order.
    fn reference_headers<'h>(head: &'h str, name: &str) -> Vec<&'h str> {
        let mut found = Vec::new();
        for line in head.split('\n').skip(1) {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            if !field.is_empty()
                && !field.ends_with([' ', '\t'])
                && field.eq_ignore_ascii_case(name)
            {
                found.push(value.trim_matches([' ', '\t']));
            }
        }
        found
    }

    /// The first cookie `name` across the Cookie headers: pairs split on `;`, trimmed, the
    /// name up to the first `=`.
    fn reference_cookie(head: &str, name: &str) -> Option<String> {
        reference_headers(head, "cookie")
            .into_iter()
            .find_map(|value| {
                value.split(';').find_map(|pair| {
                    let (pair_name, cookie) = pair.trim_matches([' ', '\t']).split_once('=')?;
                    (pair_name == name).then(|| cookie.trim_matches([' ', '\t']).to_owned())
                })
            })
    }

    /// The first query parameter `name` of the request line's target.
    fn reference_query(head: &str, name: &str) -> Option<String> {
        let line = head.split('\n').next()?;
        if !head.contains('\n') {
            return None;
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (method, rest) = line.split_once(' ')?;
        if method.is_empty() {
            return None;
        }
        let target = rest.split(' ').next()?;
        let target = target.split('#').next()?;
        let (_, query) = target.split_once('?')?;
        query
            .split('&')
            .find_map(|pair| match pair.split_once('=') {
                Some((n, value)) if n == name => Some(value.to_owned()),
                None if pair == name => Some(String::new()),
                _ => None,
            })
    }

    fn reference_element(element: &str) -> RefKey {
        match reference_addr(element) {
            Some(ip) => RefKey::Addr(ip),
            None => RefKey::Bytes(element.to_owned()),
        }
    }

    fn reference_xff(head: &str, peer: IpAddr, trust: &Trust) -> Option<RefKey> {
        let usable = |e: &&str| !e.is_empty() && e.to_lowercase() != "unknown";
        if trust.is_empty() {
            let value = *reference_headers(head, "x-forwarded-for").first()?;
            let element = value
                .split(',')
                .map(|e| e.trim_matches([' ', '\t']))
                .find(usable)?;
            return Some(reference_element(element));
        }
        if !trust.contains(peer) {
            return None;
        }
        let elements: Vec<&str> = reference_headers(head, "x-forwarded-for")
            .into_iter()
            .flat_map(|value| value.split(','))
            .map(|e| e.trim_matches([' ', '\t']))
            .filter(usable)
            .collect();
        let untrusted = elements
            .iter()
            .rev()
            .find(|e| !reference_addr(e).is_some_and(|ip| trust.contains(ip)));
        untrusted
            .or(elements.first())
            .map(|element| reference_element(element))
    }

    fn reference_rule(rule: &str, head: &str, peer: IpAddr, trust: &Trust) -> Option<RefKey> {
        if rule == "ip" {
            return Some(RefKey::Addr(peer));
        }
        let bytes = |value: String| (!value.is_empty()).then_some(RefKey::Bytes(value));
        if let Some(name) = rule.strip_prefix("cookie:") {
            return reference_cookie(head, name).and_then(bytes);
        }
        if let Some(name) = rule.strip_prefix("query:") {
            return reference_query(head, name).and_then(bytes);
        }
        let name = rule.strip_prefix("header:").unwrap().to_lowercase();
        if name == "x-forwarded-for" {
            return reference_xff(head, peer, trust);
        }
        reference_header(head, &name).and_then(bytes)
    }

    fn reference_decide(
        rules: &[&str],
        fallback: &str,
        trust: &Trust,
        head: &str,
        peer: IpAddr,
    ) -> Decision {
        let hash = |key: RefKey| match key {
            RefKey::Addr(ip) => key_hash(Key::Addr(crate::keys::fold_addr(ip))),
            RefKey::Bytes(bytes) => key_hash(Key::Bytes(bytes.as_bytes())),
        };
        if let Some(key) = rules
            .iter()
            .find_map(|r| reference_rule(r, head, peer, trust))
        {
            return Decision::Route {
                hash: hash(key),
                fallback: false,
            };
        }
        let key = reference_rule(fallback, head, peer, trust).unwrap_or(RefKey::Addr(peer));
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
            "cookie",
            "COOKIE",
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
        let value = prop_oneof![
            "[ \t]{0,2}[a-zA-Z0-9.:_-]{0,12}[ \t]{0,2}",
            xff_value(),
            cookie_value()
        ];
        (name, shape, value, any::<bool>()).prop_map(|(name, shape, value, crlf)| {
            let line = shape.replace("{n}", name).replace("{v}", &value);
            format!("{line}{}", if crlf { "\r\n" } else { "\n" })
        })
    }

    /// A Cookie header value: pairs of a few names, `;`-separated, odd spacing.
    fn cookie_value() -> impl Strategy<Value = String> {
        let pair = prop::sample::select(vec![
            "sid=1",
            "sid=",
            "sid = 2",
            " sid=\t3 ",
            "SID=4",
            "a=5",
            "a",
            "x=sid=6",
            "sid=\"q 7\"",
            "sid=a=b",
            "",
            " ",
            "ssid=8",
            "a=;",
        ]);
        prop::collection::vec(pair, 0..4).prop_map(|pairs| pairs.join(";"))
    }

    /// A request line: its method, target (maybe with a query and a fragment) and version.
    fn request_line() -> impl Strategy<Value = String> {
        let param = prop::sample::select(vec![
            "sid=1",
            "sid=",
            "sid",
            "q=2",
            "x=sid=3",
            "sid=%41+b",
            "ssid=4",
            "",
            "q",
            "sid=5=6",
        ]);
        let query = prop::collection::vec(param, 0..4).prop_map(|params| params.join("&"));
        let shape = prop::sample::select(vec![
            "GET /p?{q} HTTP/1.1",
            "GET /p?{q}#sid=9 HTTP/1.1",
            "GET /p#x?{q} HTTP/1.1",
            "POST /a/b?{q}",
            "GET  /p?{q} HTTP/1.1",
            "GET /p HTTP/1.1",
            "/p?{q}",
            " /p?{q} HTTP/1.1",
        ]);
        (shape, query).prop_map(|(shape, query)| shape.replace("{q}", &query))
    }

    /// A complete request head (and maybe a body that must not be read).
    fn request() -> impl Strategy<Value = String> {
        (
            request_line(),
            prop::collection::vec(field_line(), 0..8),
            any::<bool>(),
            "[a-z:\r\n ]{0,16}",
        )
            .prop_map(|(line, fields, crlf, body)| {
                let eol = if crlf { "\r\n" } else { "\n" };
                format!("{line}{eol}{}{eol}{body}", fields.concat())
            })
    }

    type Rules = (Vec<&'static str>, &'static str, &'static [&'static str]);

    fn rules() -> impl Strategy<Value = Rules> {
        (
            prop::collection::vec(prop::sample::select(RULES.to_vec()), 1..4),
            prop::sample::select(RULES.to_vec()),
            prop::sample::select(TRUSTS.to_vec()),
        )
    }

    fn trust(networks: &[&str]) -> Trust {
        Trust::new(networks.iter().map(|n| n.parse().unwrap()).collect())
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
                b"Cookie: sid=",
                b"; sid=",
                b"GET /p?sid=",
                b"&sid=",
                b" ",
                b"#",
            ])
            .prop_map(<[u8]>::to_vec),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn never_panics_and_fin_always_routes(bytes in noise(), (rules, fallback, networks) in rules(), peer in peer()) {
            let plan = plan(&rules, fallback).with_trust(trust(networks));
            let _ = plan.decide(&bytes, peer, false);
            let is_route = matches!(plan.decide(&bytes, peer, true), Decision::Route { .. });
            prop_assert!(is_route);
        }

        #[test]
        fn matches_the_reference(head in request(), (rules, fallback, networks) in rules(), peer in peer()) {
            let trust = trust(networks);
            let plan = plan(&rules, fallback).with_trust(trust.clone());
            let expected = reference_decide(&rules, fallback, &trust, &head, peer);
            prop_assert_eq!(plan.decide(head.as_bytes(), peer, true), expected);
            prop_assert_eq!(plan.decide(head.as_bytes(), peer, false), expected);
        }

        #[test]
        fn a_prefix_never_routes_differently(head in request(), (rules, fallback, networks) in rules(), peer in peer()) {
            let plan = plan(&rules, fallback).with_trust(trust(networks));
            let whole = plan.decide(head.as_bytes(), peer, true);
            for cut in 0..head.len() {
                let early = plan.decide(&head.as_bytes()[..cut], peer, false);
                prop_assert!(early == Decision::NeedMore || early == whole, "cut {}: {:?} vs {:?}", cut, early, whole);
            }
        }

        #[test]
        fn the_head_end_agrees_with_the_line_scan(head in request()) {
            let bytes = head.as_bytes();
            let end = crate::keys::Request::new(bytes, PEER);
            let by_lines = head.split_inclusive('\n').skip(1).scan(head.find('\n').map_or(0, |i| i + 1), |at, line| {
                let start = *at;
                *at += line.len();
                Some((start, line))
            }).find(|(_, line)| *line == "\n" || *line == "\r\n").map(|(start, line)| start + line.len());
            prop_assert!(end.complete());
            prop_assert_eq!(Some(end.head().len()), by_lines);
        }
    }
}
