//! Custom key functions through the public API: closures infer their higher-ranked signature,
//! see the request head read-only, and take part in a plan like any other rule.

use std::net::{IpAddr, Ipv4Addr};

use stickyd::decide::{Decision, KeyPlan};
use stickyd::keys::{CustomKey, Key, KeyFn, KeyRule, Request, key_fn};
use stickyd::route::key_hash;

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));

fn routed(key: Key<'_>, fallback: bool) -> Decision {
    Decision::Route {
        hash: key_hash(key),
        fallback,
    }
}

/// A token in a path segment: `/s/<token>/...`.
fn path_token<'a>(request: &Request<'a>) -> Option<Key<'a>> {
    let rest = request.path().strip_prefix(b"/s/")?;
    let token = rest.split(|&b| b == b'/').next()?;
    (!token.is_empty()).then_some(Key::Bytes(token))
}

#[test]
fn a_path_token_routes() {
    let plan = KeyPlan::new(vec![key_fn(path_token)], KeyRule::Ip);
    let head = b"GET /s/tok-42/items?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(
        plan.decide(head, PEER, false),
        routed(Key::Bytes(b"tok-42"), false)
    );
    let head = b"GET /other HTTP/1.1\r\n\r\n";
    assert_eq!(
        plan.decide(head, PEER, false),
        routed(Key::Addr(PEER), true)
    );
}

#[test]
fn the_view_offers_every_lookup() {
    let rule = key_fn(|request| {
        assert_eq!(request.method(), b"POST");
        assert_eq!(request.target(), b"/api/v1?tenant=t1&x");
        assert_eq!(request.query("x"), Some(&b""[..]));
        assert_eq!(request.header("x-api-key"), Some(&b"k"[..]));
        assert_eq!(request.cookie("sid"), Some(&b"c"[..]));
        assert_eq!(request.peer(), PEER);
        assert!(request.complete());
        request.query("tenant").map(Key::Bytes)
    });
    let plan = KeyPlan::new(vec![rule], KeyRule::Ip);
    let head = b"POST /api/v1?tenant=t1&x HTTP/1.1\r\nX-Api-Key: k\r\nCookie: sid=c\r\n\r\n{}";
    assert_eq!(
        plan.decide(head, PEER, false),
        routed(Key::Bytes(b"t1"), false)
    );
}

#[test]
fn waits_for_the_head_then_runs_at_fin() {
    let rule = key_fn(|request| {
        let key = request.header("x-user")?;
        Some(Key::Bytes(key))
    });
    let plan = KeyPlan::new(vec![rule], KeyRule::Ip);
    let head = b"GET / HTTP/1.1\r\nX-User: u1\r\nHost: a";
    assert_eq!(plan.decide(head, PEER, false), Decision::NeedMore);
    assert_eq!(
        plan.decide(head, PEER, true),
        routed(Key::Bytes(b"u1"), false)
    );
}

/// A key function as a type, with state.
struct Prefixed(&'static [u8]);

impl KeyFn for Prefixed {
    fn key<'a>(&self, request: &Request<'a>) -> Option<Key<'a>> {
        request.path().strip_prefix(self.0).map(Key::Bytes)
    }
}

#[test]
fn a_key_fn_type_and_rule_identity() {
    let custom = KeyRule::Custom(CustomKey::new(Prefixed(b"/u/")));
    assert_eq!(custom, custom.clone());
    assert_ne!(custom, KeyRule::Custom(CustomKey::new(Prefixed(b"/u/"))));
    assert_eq!(custom.to_string(), "custom");
    assert_eq!(format!("{custom:?}"), "Custom(..)");
    assert!(custom.needs_bytes());
    let plan = KeyPlan::new(vec![custom], KeyRule::Ip);
    assert!(plan.needs_request());
    let head = b"GET /u/bob HTTP/1.1\r\n\r\n";
    assert_eq!(
        plan.decide(head, PEER, false),
        routed(Key::Bytes(b"bob"), false)
    );
}
