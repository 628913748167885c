//! Key extraction against the httparse route, on realistic requests.
//!
//! Three requests: a Chrome-like browser request as a proxy forwards it (about 650 bytes,
//! X-Forwarded-For near the end), the same with a 2 KiB `Cookie` header (the session cookie
//! near its end), and a search request whose query holds the session parameter. For each
//! request and each HTTP extractor (`header:NAME`, X-Forwarded-For, `cookie:NAME`,
//! `query:NAME`), one group holds stickyd's extractor and the httparse route side by side: a
//! full `httparse::Request::parse` of the same bytes, then the same lookup on its result (the
//! header; for X-Forwarded-For its leftmost element read as an address, as stickyd does; the
//! cookie among the `Cookie` headers' pairs; the parameter in the path's query).
//! `httparse (value only)` stops at the header value, for reference.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stickyd::decide::KeyPlan;
use stickyd::keys::{Found, Key, KeyRule, Trust};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

/// The request line of the browser and cookie requests.
const PAGE: &str = "GET /account/settings?tab=profile&sid=q-7f3a9c HTTP/1.1\r\n";

/// The request line of the search request.
const SEARCH: &str = "GET /search?q=io_uring+sticky+sessions&page=2&lang=en&sid=q-5b1e0d&utm_source=mail HTTP/1.1\r\n";

/// Chrome-like headers, before the cookie.
const HEADERS: &str = "Host: app.example.com\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Referer: https://app.example.com/account\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en;q=0.9\r\n";

/// The proxy's headers, last.
const FORWARDED: &str = "X-Forwarded-For: 203.0.113.195, 198.51.100.17\r\n\
X-Forwarded-Proto: https\r\n\r\n";

/// A short cookie header.
const SMALL_COOKIE: &str = "Cookie: theme=dark; sid=c-91d2e4\r\n";

/// A 2 KiB cookie header: analytics and preference cookies, the session cookie last.
fn big_cookie() -> String {
    let mut cookie = String::from("Cookie: _ga=GA1.2.1234567890.1700000000; theme=dark");
    let mut i = 0;
    while cookie.len() < 2000 {
        cookie.push_str(&format!("; _pref{i}=v{i}-0123456789abcdef0123456789abcdef"));
        i += 1;
    }
    cookie.push_str("; sid=c-91d2e4\r\n");
    cookie
}

/// The three requests, named.
fn requests() -> Vec<(&'static str, Vec<u8>)> {
    let browser = [PAGE, HEADERS, SMALL_COOKIE, FORWARDED].concat();
    let cookie = [PAGE, HEADERS, &big_cookie(), FORWARDED].concat();
    let search = [SEARCH, HEADERS, SMALL_COOKIE, FORWARDED].concat();
    vec![
        ("browser", browser.into_bytes()),
        ("cookie-2k", cookie.into_bytes()),
        ("search", search.into_bytes()),
    ]
}

/// A full parse with httparse.
fn parse<'h, 'b>(
    bytes: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
) -> Option<httparse::Request<'h, 'b>> {
    let mut request = httparse::Request::new(headers);
    request.parse(bytes).ok()?;
    Some(request)
}

fn httparse_header<'b>(bytes: &'b [u8], name: &str) -> Option<&'b [u8]> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let request = parse(bytes, &mut headers)?;
    request
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value)
}

fn httparse_xff(bytes: &[u8]) -> Option<Key<'_>> {
    let value = httparse_header(bytes, "x-forwarded-for")?;
    let element = value.split(|&b| b == b',').next()?.trim_ascii();
    let key = match std::str::from_utf8(element).ok()?.parse::<IpAddr>() {
        Ok(ip) => Key::Addr(ip),
        Err(_) => Key::Bytes(element),
    };
    Some(key)
}

fn httparse_cookie<'b>(bytes: &'b [u8], name: &str) -> Option<&'b [u8]> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let request = parse(bytes, &mut headers)?;
    let cookies = request
        .headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("cookie"));
    cookies
        .flat_map(|header| header.value.split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let value = pair.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
            Some(value)
        })
}

fn httparse_query<'b>(bytes: &'b [u8], name: &str) -> Option<&'b [u8]> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let request = parse(bytes, &mut headers)?;
    let target = request.path?;
    let target = target.split('#').next()?;
    let (_, query) = target.split_once('?')?;
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix(name)?.strip_prefix('=')?;
        Some(value.as_bytes())
    })
}

fn rule(text: &str) -> KeyRule {
    text.parse().expect("valid rule")
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// An extractor: its name, its rule, and the httparse route to the same value.
type Case = (&'static str, KeyRule, fn(&[u8]) -> bool);

fn extractors(c: &mut Criterion) {
    for (request, bytes) in requests() {
        let bytes = &bytes[..];
        let cases: [Case; 4] = [
            ("header", rule("header:x-forwarded-proto"), |b| {
                httparse_header(b, "x-forwarded-proto").is_some()
            }),
            ("x-forwarded-for", rule("header:x-forwarded-for"), |b| {
                httparse_xff(b).is_some()
            }),
            ("cookie", rule("cookie:sid"), |b| {
                httparse_cookie(b, "sid").is_some()
            }),
            ("query", rule("query:sid"), |b| {
                httparse_query(b, "sid").is_some()
            }),
        ];
        for (extractor, rule, httparse_route) in cases {
            assert!(matches!(rule.extract(bytes, PEER), Found::Key(_)));
            assert!(httparse_route(bytes));
            let mut group = c.benchmark_group(format!("{request}/{extractor}"));
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            group.bench_function("stickyd", |b| {
                b.iter(|| rule.extract(black_box(bytes), PEER))
            });
            group.bench_function("httparse", |b| b.iter(|| httparse_route(black_box(bytes))));
            if extractor == "x-forwarded-for" {
                group.bench_function("httparse (value only)", |b| {
                    b.iter(|| httparse_header(black_box(bytes), "x-forwarded-for"))
                });
            }
            group.finish();
        }
    }
}

fn others(c: &mut Criterion) {
    let browser = requests().swap_remove(0).1;
    let browser = &browser[..];
    let mut group = c.benchmark_group("browser/other");
    group.throughput(Throughput::Bytes(browser.len() as u64));

    let absent = rule("header:x-session");
    assert_eq!(absent.extract(browser, PEER), Found::Absent);
    group.bench_function("absent header", |b| {
        b.iter(|| absent.extract(black_box(browser), PEER))
    });

    group.bench_function("ip", |b| {
        b.iter(|| KeyRule::Ip.extract(black_box(browser), black_box(PEER)))
    });

    let xff = rule("header:x-forwarded-for");
    let trust = Trust::new(vec!["127.0.0.0/8".parse().unwrap()]);
    let plan = KeyPlan::new(vec![xff.clone()], KeyRule::Ip).with_trust(trust);
    group.bench_function("decide x-forwarded-for with --trust", |b| {
        b.iter(|| plan.decide(black_box(browser), black_box(PEER), false))
    });

    let plan = KeyPlan::new(vec![xff.clone()], KeyRule::Ip);
    group.bench_function("decide x-forwarded-for", |b| {
        b.iter(|| plan.decide(black_box(browser), black_box(PEER), false))
    });
    let plan = KeyPlan::new(vec![rule("cookie:sid"), xff], KeyRule::Ip);
    group.bench_function("decide cookie, x-forwarded-for (absent cookie)", |b| {
        let no_cookie = [PAGE, HEADERS, FORWARDED].concat();
        let no_cookie = no_cookie.as_bytes();
        b.iter(|| plan.decide(black_box(no_cookie), black_box(PEER), false))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = extractors, others
}
criterion_main!(benches);
