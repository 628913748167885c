//! Pairing a `CONNS` message's records with the fds that arrived, and the `ACK` that answers
//! it. No I/O: the receive path calls [`pair`], sends [`Batch::ack`], then queues
//! [`Batch::arrived`].

use std::os::fd::OwnedFd;

use crate::wire::{self, ConnRecord, Records};

/// The outcome of one `CONNS` message.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Records whose fds arrived, with their fds, in order.
    pub(crate) arrived: Vec<(ConnRecord, OwnedFd)>,
    /// Records whose fds did not arrive (`MSG_CTRUNC`): returned to the master.
    pub(crate) returned: usize,
    /// Fds beyond the record count (a protocol error); already closed.
    pub(crate) extra: usize,
}

/// Pairs records with fds in order: the kernel installs the first fds and drops the rest
/// when it cannot install more, so fd `i` belongs to record `i`. Extra fds are closed.
pub(crate) fn pair(records: Records<'_>, fds: Vec<OwnedFd>) -> Batch {
    let extra = fds.len().saturating_sub(records.len());
    let returned = records.len().saturating_sub(fds.len());
    // Zipping drops (closes) any fd without a record.
    let arrived = records.iter().zip(fds).collect();
    Batch {
        arrived,
        returned,
        extra,
    }
}

impl Batch {
    /// Appends the `ACK` for this message: exactly the seqs whose fds arrived.
    pub(crate) fn ack(&self, out: &mut Vec<u8>) {
        let seqs: Vec<u64> = self.arrived.iter().map(|(rec, _)| rec.seq).collect();
        wire::encode_ack(&seqs, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Message, decode, encode_conns};
    use std::net::SocketAddr;

    fn records(n: u64) -> Vec<u8> {
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let recs: Vec<ConnRecord> = (0..n)
            .map(|i| ConnRecord {
                seq: 100 + i,
                key_hash: i,
                accepted_ns: 0,
                peer,
                listener: 0,
                proxy_len: 0,
            })
            .collect();
        let mut buf = Vec::new();
        encode_conns(&recs, &mut buf);
        buf
    }

    fn fds(n: usize) -> Vec<OwnedFd> {
        (0..n)
            .map(|_| OwnedFd::from(std::fs::File::open("/dev/null").unwrap()))
            .collect()
    }

    fn acked(batch: &Batch) -> Vec<u64> {
        let mut buf = Vec::new();
        batch.ack(&mut buf);
        match decode(&buf).unwrap() {
            Message::Ack(seqs) => seqs.iter().collect(),
            other => panic!("not an ACK: {other:?}"),
        }
    }

    #[test]
    fn all_fds_arrived() {
        let buf = records(3);
        let Message::Conns(recs) = decode(&buf).unwrap() else {
            panic!()
        };
        let batch = pair(recs, fds(3));
        assert_eq!(
            (batch.arrived.len(), batch.returned, batch.extra),
            (3, 0, 0)
        );
        assert_eq!(acked(&batch), [100, 101, 102]);
    }

    #[test]
    fn truncated_names_only_the_first_arrived() {
        let buf = records(5);
        let Message::Conns(recs) = decode(&buf).unwrap() else {
            panic!()
        };
        let batch = pair(recs, fds(2));
        assert_eq!(
            (batch.arrived.len(), batch.returned, batch.extra),
            (2, 3, 0)
        );
        assert_eq!(acked(&batch), [100, 101]);
        let seqs: Vec<u64> = batch.arrived.iter().map(|(r, _)| r.seq).collect();
        assert_eq!(seqs, [100, 101]);
    }

    #[test]
    fn no_fd_arrived_acks_none() {
        let buf = records(4);
        let Message::Conns(recs) = decode(&buf).unwrap() else {
            panic!()
        };
        let batch = pair(recs, Vec::new());
        assert_eq!((batch.arrived.len(), batch.returned), (0, 4));
        assert_eq!(acked(&batch), Vec::<u64>::new());
    }

    #[test]
    fn extra_fds_are_counted_and_closed() {
        let buf = records(1);
        let Message::Conns(recs) = decode(&buf).unwrap() else {
            panic!()
        };
        let batch = pair(recs, fds(3));
        assert_eq!(
            (batch.arrived.len(), batch.returned, batch.extra),
            (1, 0, 2)
        );
        assert_eq!(acked(&batch), [100]);
    }
}
