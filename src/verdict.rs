//! What to do with a pending connection, given the bytes peeked from it so far: read its PROXY
//! header when the listeners expect one, then let the key plan decide. Pure: the event loop
//! supplies the bytes and carries the verdict out.

use std::net::SocketAddr;

use crate::config::OnTimeout;
use crate::decide::{Decision, KeyPlan};
use crate::proxy;

/// How connections are examined: the key plan, and whether they start with a PROXY header.
#[derive(Clone, Debug)]
pub struct Examiner {
    plan: KeyPlan,
    proxy_protocol: bool,
    max_peek: usize,
    on_timeout: OnTimeout,
}

/// Why a connection is closed instead of routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client sent nothing before it closed.
    Empty,
    /// The PROXY header is malformed.
    MalformedProxy(proxy::Error),
    /// The PROXY header never completed (the client hung up, or the deadline passed).
    IncompleteProxy,
    /// The PROXY header is longer than the wire protocol's `u16` can carry.
    OversizedProxy,
    /// No key by the deadline or the peek limit, and `--on-timeout close`.
    NoKey,
}

/// The verdict on a pending connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Route by this key hash.
    Route {
        /// The key hash.
        hash: u64,
        /// The fallback rule decided.
        fallback: bool,
        /// The client: the TCP peer, or the address its PROXY header carries.
        peer: SocketAddr,
        /// Bytes of PROXY header the worker must consume first.
        proxy_len: u16,
    },
    /// The bytes can still grow and do not decide yet: wait for more.
    NeedMore,
    /// Close the connection.
    Close(Refusal),
}

/// Why the bytes cannot grow any more, or the master stops waiting for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finality {
    /// More bytes may come.
    Open,
    /// The client closed or half-closed: decide from what arrived.
    HungUp,
    /// The peek deadline passed or `--max-peek` bytes arrived: `--on-timeout` decides.
    GaveUp,
}

impl Examiner {
    /// An examiner for these settings.
    pub fn new(
        plan: KeyPlan,
        proxy_protocol: bool,
        max_peek: usize,
        on_timeout: OnTimeout,
    ) -> Examiner {
        Examiner {
            plan,
            proxy_protocol,
            max_peek,
            on_timeout,
        }
    }

    /// The key plan.
    pub fn plan(&self) -> &KeyPlan {
        &self.plan
    }

    /// True when a connection is routed the moment it is accepted, unpeeked: the first rule is
    /// `ip` and there is no PROXY header to read.
    pub fn routes_at_accept(&self) -> bool {
        !self.proxy_protocol && self.plan.routes_at_accept()
    }

    /// True when a connection from `peer` must be closed before anything is read: it would
    /// send a PROXY header and is not a trusted proxy.
    pub fn refuses_peer(&self, peer: SocketAddr) -> bool {
        self.proxy_protocol
            && !self.plan.trust().is_empty()
            && !self.plan.trust().contains(peer.ip())
    }

    /// Decides from `bytes`, everything peeked from the start of the connection.
    pub fn examine(&self, bytes: &[u8], tcp_peer: SocketAddr, finality: Finality) -> Verdict {
        if bytes.is_empty() && finality == Finality::HungUp {
            return Verdict::Close(Refusal::Empty);
        }
        let (peer, proxy_len, rest) = if self.proxy_protocol {
            match proxy::parse(bytes, self.max_peek) {
                Ok(Some(header)) => {
                    let len = header.len();
                    let peer = match header {
                        proxy::Header::Proxied { source, .. } => source,
                        proxy::Header::Local { .. } => tcp_peer,
                    };
                    let Ok(proxy_len) = u16::try_from(len) else {
                        return Verdict::Close(Refusal::OversizedProxy);
                    };
                    (peer, proxy_len, bytes.get(len..).unwrap_or_default())
                }
                Ok(None) if finality == Finality::Open => return Verdict::NeedMore,
                Ok(None) => return Verdict::Close(Refusal::IncompleteProxy),
                Err(e) => return Verdict::Close(Refusal::MalformedProxy(e)),
            }
        } else {
            (tcp_peer, 0, bytes)
        };
        let fin = finality != Finality::Open;
        match self.plan.decide(rest, peer.ip(), fin) {
            Decision::NeedMore => Verdict::NeedMore,
            Decision::Route { fallback: true, .. }
                if finality == Finality::GaveUp && self.on_timeout == OnTimeout::Close =>
            {
                Verdict::Close(Refusal::NoKey)
            }
            Decision::Route { hash, fallback } => Verdict::Route {
                hash,
                fallback,
                peer,
                proxy_len,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Cidr, Key, KeyRule, Trust};
    use crate::route::key_hash;

    const TCP_PEER: &str = "127.0.0.9:40000";

    fn examiner(rules: &[&str], proxy: bool, on_timeout: OnTimeout) -> Examiner {
        let rules = rules.iter().map(|r| r.parse().unwrap()).collect();
        Examiner::new(KeyPlan::new(rules, KeyRule::Ip), proxy, 1024, on_timeout)
    }

    fn peer() -> SocketAddr {
        TCP_PEER.parse().unwrap()
    }

    fn addr_hash(ip: &str) -> u64 {
        key_hash(Key::Addr(ip.parse().unwrap()))
    }

    #[test]
    fn ip_without_proxy_routes_at_accept_and_with_proxy_reads_the_header() {
        assert!(examiner(&["ip"], false, OnTimeout::Fallback).routes_at_accept());
        let e = examiner(&["ip"], true, OnTimeout::Fallback);
        assert!(!e.routes_at_accept());
        let v1 = b"PROXY TCP4 10.0.0.1 10.0.0.2 1234 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            e.examine(v1, peer(), Finality::Open),
            Verdict::Route {
                hash: addr_hash("10.0.0.1"),
                fallback: false,
                peer: "10.0.0.1:1234".parse().unwrap(),
                proxy_len: 38,
            }
        );
        assert_eq!(
            e.examine(&v1[..20], peer(), Finality::Open),
            Verdict::NeedMore
        );
        assert_eq!(
            e.examine(&v1[..20], peer(), Finality::HungUp),
            Verdict::Close(Refusal::IncompleteProxy)
        );
        assert!(matches!(
            e.examine(b"GET / HTTP/1.1\r\n", peer(), Finality::Open),
            Verdict::Close(Refusal::MalformedProxy(_))
        ));
        // A health check: the real peer.
        assert_eq!(
            e.examine(b"PROXY UNKNOWN\r\n", peer(), Finality::Open),
            Verdict::Route {
                hash: addr_hash("127.0.0.9"),
                fallback: false,
                peer: peer(),
                proxy_len: 15,
            }
        );
    }

    #[test]
    fn rules_read_the_bytes_after_the_proxy_header() {
        let e = examiner(&["header:x-session"], true, OnTimeout::Fallback);
        let bytes = b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\nGET / HTTP/1.1\r\nX-Session: abc\r\n\r\n";
        match e.examine(bytes, peer(), Finality::Open) {
            Verdict::Route {
                hash,
                fallback,
                proxy_len,
                ..
            } => {
                assert_eq!(hash, key_hash(Key::Bytes(b"abc")));
                assert!(!fallback);
                assert_eq!(proxy_len, 34);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn giving_up_follows_on_timeout_but_a_hang_up_never_closes_what_arrived() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n";
        let fallback = examiner(&["header:x-session"], false, OnTimeout::Fallback);
        let close = examiner(&["header:x-session"], false, OnTimeout::Close);
        assert_eq!(
            close.examine(head, peer(), Finality::Open),
            Verdict::NeedMore
        );
        assert_eq!(
            close.examine(head, peer(), Finality::GaveUp),
            Verdict::Close(Refusal::NoKey)
        );
        assert!(matches!(
            fallback.examine(head, peer(), Finality::GaveUp),
            Verdict::Route { fallback: true, .. }
        ));
        assert!(matches!(
            close.examine(head, peer(), Finality::HungUp),
            Verdict::Route { fallback: true, .. }
        ));
        assert_eq!(
            close.examine(b"", peer(), Finality::HungUp),
            Verdict::Close(Refusal::Empty)
        );
    }

    #[test]
    fn only_trusted_peers_may_send_a_proxy_header() {
        let trust = Trust::new(vec!["127.0.0.2/32".parse::<Cidr>().unwrap()]);
        let plan = KeyPlan::new(vec![KeyRule::Ip], KeyRule::Ip).with_trust(trust);
        let e = Examiner::new(plan.clone(), true, 1024, OnTimeout::Fallback);
        assert!(e.refuses_peer(peer()));
        assert!(!e.refuses_peer("127.0.0.2:1".parse().unwrap()));
        // Without the PROXY protocol, the trust list only governs X-Forwarded-For.
        let e = Examiner::new(plan, false, 1024, OnTimeout::Fallback);
        assert!(!e.refuses_peer(peer()));
        // Without a trust list, every peer may.
        assert!(!examiner(&["ip"], true, OnTimeout::Fallback).refuses_peer(peer()));
    }
}
