//! The server name from a real-size TLS ClientHello: about 600 bytes (X25519 key share,
//! padded as browsers pad), and about 1800 bytes over two records (an X25519MLKEM768
//! post-quantum key share, as current browsers send).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stickyd::keys::{Found, Key, KeyRule};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const NAME: &[u8] = b"accounts.example.com";

#[path = "../tests/util/tls.rs"]
mod tls_util;

use tls_util::{client_hello, records_of};

fn tls(c: &mut Criterion) {
    let sni: KeyRule = "sni".parse().expect("the sni rule");
    let mut group = c.benchmark_group("tls");
    let cases = [
        (
            "sni 600 bytes",
            records_of(&client_hello(Some(NAME), 32, 295), 16384),
        ),
        (
            "sni 1800 bytes, 2 records",
            records_of(&client_hello(Some(NAME), 1248, 264), 1400),
        ),
    ];
    for (name, bytes) in &cases {
        assert_eq!(sni.extract(bytes, PEER), Found::Key(Key::Bytes(NAME)));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| sni.extract(black_box(bytes), black_box(PEER)))
        });
    }
    group.finish();
}

criterion_group!(benches, tls);
criterion_main!(benches);
