//! Key extraction from a realistic browser request (622 bytes of Chrome-like headers, as a
//! proxy forwards them, X-Forwarded-For near the end): finding X-Forwarded-For, looking for a
//! header that is absent, and `ip`. httparse's full parse plus a header lookup of the same
//! request is the point of comparison.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stickyd::decide::KeyPlan;
use stickyd::keys::{Found, KeyRule};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

/// A Chrome-like request as a proxy forwards it, X-Forwarded-For near the end.
const REQUEST: &[u8] = b"GET /account/settings?tab=profile HTTP/1.1\r\n\
Host: app.example.com\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Referer: https://app.example.com/account\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en;q=0.9\r\n\
X-Forwarded-For: 203.0.113.195, 198.51.100.17\r\n\
X-Forwarded-Proto: https\r\n\r\n";

fn rule(text: &str) -> KeyRule {
    text.parse().expect("valid rule")
}

/// The comparison: a full parse with httparse, then the first X-Forwarded-For header.
fn httparse_lookup<'a>(bytes: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(bytes).ok()?;
    request
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value)
}

fn keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("keys");
    group.throughput(Throughput::Bytes(REQUEST.len() as u64));

    let xff = rule("header:x-forwarded-for");
    assert!(matches!(xff.extract(REQUEST, PEER), Found::Key(_)));
    group.bench_function("x-forwarded-for", |b| {
        b.iter(|| xff.extract(black_box(REQUEST), black_box(PEER)))
    });

    let absent = rule("header:x-session");
    assert_eq!(absent.extract(REQUEST, PEER), Found::Absent);
    group.bench_function("absent header", |b| {
        b.iter(|| absent.extract(black_box(REQUEST), black_box(PEER)))
    });

    group.bench_function("ip", |b| {
        b.iter(|| KeyRule::Ip.extract(black_box(REQUEST), black_box(PEER)))
    });

    let plan = KeyPlan::new(vec![xff.clone()], KeyRule::Ip);
    group.bench_function("decide x-forwarded-for", |b| {
        b.iter(|| plan.decide(black_box(REQUEST), black_box(PEER), false))
    });

    assert!(httparse_lookup(REQUEST, "x-forwarded-for").is_some());
    group.bench_function("httparse x-forwarded-for", |b| {
        b.iter(|| httparse_lookup(black_box(REQUEST), "x-forwarded-for"))
    });
    group.finish();
}

criterion_group!(benches, keys);
criterion_main!(benches);
