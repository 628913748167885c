//! Parsing PROXY protocol headers: v1 text (TCP4, TCP6) and v2 binary (IPv4, IPv6 with TLVs),
//! each followed by the start of the request, as the master peeks it.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stickyd::proxy::{Header, parse};

const MAX_LEN: usize = 16 * 1024;
const REQUEST: &[u8] = b"GET /account/settings HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
const SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 PROXY header: TCP over `family` with `addresses` (the address block) and `tlvs`.
fn v2(family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut bytes = SIGNATURE.to_vec();
    bytes.extend([0x21, family]);
    bytes.extend(((addresses.len() + tlvs.len()) as u16).to_be_bytes());
    bytes.extend(addresses);
    bytes.extend(tlvs);
    bytes
}

fn with_request(header: &[u8]) -> Vec<u8> {
    let mut bytes = header.to_vec();
    bytes.extend(REQUEST);
    bytes
}

fn proxy(c: &mut Criterion) {
    let v4_block = [192, 0, 2, 1, 198, 51, 100, 22, 0xc8, 0x22, 1, 0xbb];
    let mut v6_block = vec![0x20, 0x01, 0x0d, 0xb8];
    v6_block.extend([0; 11]);
    v6_block.push(1);
    v6_block.extend([0x20, 0x01, 0x0d, 0xb8]);
    v6_block.extend([0; 11]);
    v6_block.push(2);
    v6_block.extend([0x9c, 0x40, 0x20, 0xfb]);
    // PP2_TYPE_AUTHORITY and PP2_TYPE_UNIQUE_ID, as AWS and HAProxy add them.
    let mut tlvs = vec![0x02, 0, 15];
    tlvs.extend(b"app.example.com");
    tlvs.extend([0x05, 0, 16]);
    tlvs.extend([0xab; 16]);

    let cases = [
        (
            "v1 tcp4",
            &b"PROXY TCP4 203.0.113.195 198.51.100.22 51234 443\r\n"[..],
        ),
        (
            "v1 tcp6",
            b"PROXY TCP6 2001:db8:85a3::8a2e:370:7334 2001:db8::2 40000 8443\r\n",
        ),
    ]
    .map(|(name, header)| (name, header.len(), with_request(header)));
    let binary = [
        ("v2 ipv4", v2(0x11, &v4_block, &[])),
        ("v2 ipv6 + tlvs", v2(0x21, &v6_block, &tlvs)),
    ]
    .map(|(name, header)| (name, header.len(), with_request(&header)));

    let mut group = c.benchmark_group("proxy");
    for (name, len, bytes) in cases.iter().chain(&binary) {
        assert!(
            matches!(parse(bytes, MAX_LEN), Ok(Some(header @ Header::Proxied { .. })) if header.len() == *len)
        );
        group.throughput(Throughput::Bytes(*len as u64));
        group.bench_function(*name, |b| {
            b.iter(|| parse(black_box(bytes), black_box(MAX_LEN)))
        });
    }
    group.finish();
}

criterion_group!(benches, proxy);
criterion_main!(benches);
