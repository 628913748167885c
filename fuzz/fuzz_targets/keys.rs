//! Arbitrary bytes through `KeyPlan::decide` for several plans, with and without trusted
//! proxies: no panic, and a decision made on a prefix is never revised by the whole.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use stickyd::decide::{Decision, KeyPlan};
use stickyd::keys::{Cidr, KeyRule, Trust};

/// A trusted proxy and an untrusted client (loopback addresses, as values only).
const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

const RULES: &[&str] = &[
    "header:x-forwarded-for",
    "header:x-session",
    "cookie:sid",
    "query:id",
    "sni",
];

static PLANS: LazyLock<Vec<KeyPlan>> = LazyLock::new(|| {
    let rules: Vec<KeyRule> = RULES.iter().filter_map(|rule| rule.parse().ok()).collect();
    let trust = Trust::new(vec!["127.0.0.1/32".parse::<Cidr>().expect("a valid CIDR")]);
    let mut plans = Vec::new();
    for rule in &rules {
        plans.push(KeyPlan::new(vec![rule.clone()], KeyRule::Ip));
        plans.push(KeyPlan::new(vec![rule.clone()], KeyRule::Ip).with_trust(trust.clone()));
    }
    // All of them in order, each rule's fallback the next.
    if let Some(last) = rules.last() {
        plans.push(KeyPlan::new(rules.clone(), last.clone()).with_trust(trust));
    }
    plans
});

fuzz_target!(|data: &[u8]| {
    let split = data.iter().map(|&b| usize::from(b)).sum::<usize>() % (data.len() + 1);
    let prefix = &data[..split];
    for plan in PLANS.iter() {
        for peer in [PROXY, CLIENT] {
            let whole = plan.decide(data, peer, true);
            assert_ne!(whole, Decision::NeedMore, "fin always routes");
            let _ = plan.decide(data, peer, false);
            let early = plan.decide(prefix, peer, false);
            if early != Decision::NeedMore {
                assert_eq!(early, whole, "a prefix routed otherwise than the whole");
            }
        }
    }
});
