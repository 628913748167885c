//! Routing a key: its hash, then a rendezvous pick over 4, 16 and 64 live workers.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use stickyd::keys::Key;
use stickyd::route::{key_hash, pick};

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    let addr = Key::Addr(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 195)));
    let session = Key::Bytes(b"3f2a9c1e-52b7-4d0a-9e61-8c4f2d7b1a05");

    group.bench_function("key_hash ipv4", |b| b.iter(|| key_hash(black_box(addr))));
    group.bench_function("key_hash 36 bytes", |b| {
        b.iter(|| key_hash(black_box(session)))
    });
    for workers in [4u32, 16, 64] {
        group.bench_with_input(BenchmarkId::new("hash+pick", workers), &workers, |b, &n| {
            b.iter(|| pick(key_hash(black_box(addr)), 0..black_box(n)))
        });
    }
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
