//! A TLS ClientHello builder for the tests and the benches: a browser-like handshake message
//! naming a server, cut into TLS records.

#![allow(dead_code)]

/// A browser-like ClientHello handshake message (type, u24 length, body) naming `name`, with
/// a key share of `key_share` bytes (32 for X25519; 1216 more for X25519MLKEM768) and
/// `padding` bytes of padding extension.
pub fn client_hello(name: Option<&[u8]>, key_share: usize, padding: usize) -> Vec<u8> {
    let mut extensions: Vec<(u16, Vec<u8>)> = vec![(0x1a1a, vec![])];
    if let Some(name) = name {
        let mut list = vec![0];
        list.extend((name.len() as u16).to_be_bytes());
        list.extend(name);
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend(list);
        extensions.push((0x0000, data));
    }
    extensions.extend([
        (0x0017, vec![]),
        (0xff01, vec![0]),
        (0x000a, vec![0, 8, 0x11, 0xec, 0, 0x1d, 0, 0x17, 0, 0x18]),
        (0x000b, vec![1, 0]),
        (0x0023, vec![]),
        (0x0010, b"\x00\x0c\x02h2\x08http/1.1".to_vec()),
        (0x0005, vec![1, 0, 0, 0, 0]),
        (0x000d, vec![0, 8, 4, 3, 8, 4, 4, 1, 5, 3]),
        (0x0012, vec![]),
    ]);
    let mut share = ((key_share + 4) as u16).to_be_bytes().to_vec();
    share.extend([0x11, 0xec]);
    share.extend((key_share as u16).to_be_bytes());
    share.extend((0..key_share).map(|i| i as u8));
    extensions.extend([
        (0x0033, share),
        (0x002d, vec![1, 1]),
        (0x002b, vec![4, 0x3a, 0x3a, 3, 4]),
        (0x001b, vec![2, 0, 2]),
        (0x0015, vec![0; padding]),
    ]);

    let mut body = vec![3, 3];
    body.extend([0x7f; 32]);
    body.push(32);
    body.extend([0x5a; 32]);
    let suites = [
        0x1301u16, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
        0x009c, 0x009d, 0x002f, 0x0035,
    ];
    body.extend(((suites.len() * 2) as u16).to_be_bytes());
    suites.iter().for_each(|s| body.extend(s.to_be_bytes()));
    body.extend([1, 0]);
    let len: usize = extensions.iter().map(|(_, data)| 4 + data.len()).sum();
    body.extend((len as u16).to_be_bytes());
    for (kind, data) in extensions {
        body.extend(kind.to_be_bytes());
        body.extend((data.len() as u16).to_be_bytes());
        body.extend(data);
    }
    let mut message = vec![1];
    message.extend(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend(body);
    message
}

/// `message` in TLS records cut at `cuts` (ascending offsets in the message).
pub fn records(message: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain([&message.len()]) {
        out.extend([22, 3, 1]);
        out.extend(((end - start) as u16).to_be_bytes());
        out.extend(&message[start..end]);
        start = end;
    }
    out
}

/// `message` in TLS records of at most `max` bytes each.
pub fn records_of(message: &[u8], max: usize) -> Vec<u8> {
    let cuts: Vec<usize> = (1..message.len().div_ceil(max)).map(|i| i * max).collect();
    records(message, &cuts)
}
