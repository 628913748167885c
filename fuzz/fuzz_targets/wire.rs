//! Arbitrary bytes through `stickyd_worker::wire::decode`: no panic, and whatever decodes
//! encodes back to a message that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stickyd_worker::wire::{self, Message};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = wire::decode(data) else {
        return;
    };
    let mut out = Vec::new();
    match &message {
        Message::Hello(hello) => wire::encode_hello(hello, &mut out),
        Message::Welcome(welcome) => wire::encode_welcome(welcome, &mut out),
        Message::Refused(reason) => wire::encode_refused(reason, &mut out),
        Message::Conns(records) => {
            let records: Vec<_> = records.iter().collect();
            wire::encode_conns(&records, &mut out);
        }
        Message::Ack(seqs) => {
            let seqs: Vec<u64> = seqs.iter().collect();
            wire::encode_ack(&seqs, &mut out);
        }
        Message::Drain => wire::encode_drain(&mut out),
        Message::Drained => wire::encode_drained(&mut out),
        Message::Channels(count) => wire::encode_channels(usize::from(*count), &mut out),
        Message::Rehash(listeners) => {
            let listeners: Vec<u16> = listeners.iter().collect();
            wire::encode_rehash(&listeners, &mut out);
        }
        Message::Handback(listeners) => {
            let listeners: Vec<u16> = listeners.iter().collect();
            wire::encode_handback(&listeners, &mut out);
        }
    }
    let again = wire::decode(&out).expect("an encoded message decodes");
    assert_eq!(contents(&message), contents(&again));
});

/// The message's type and every field, records and sequence numbers included.
fn contents(message: &Message<'_>) -> String {
    match message {
        Message::Conns(records) => format!("CONNS {:?}", records.iter().collect::<Vec<_>>()),
        Message::Ack(seqs) => format!("ACK {:?}", seqs.iter().collect::<Vec<_>>()),
        Message::Rehash(l) => format!("REHASH {:?}", l.iter().collect::<Vec<_>>()),
        Message::Handback(l) => format!("HANDBACK {:?}", l.iter().collect::<Vec<_>>()),
        other => format!("{other:?}"),
    }
}
