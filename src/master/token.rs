//! Completion tokens: which part of the master an io_uring completion belongs to.

/// What an operation was submitted for, packed into the ring's 64-bit user token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// The multishot accept of listener `n`.
    Accept(u32),
    /// The peek or poll of pending connection `n` (its slab key).
    Conn(u32),
    /// The receive armed on worker `n`'s channel.
    ChannelRecv(u32),
    /// The send in flight on worker `n`'s channel.
    ChannelSend(u32),
    /// Worker `n`'s pidfd became readable: the process exited.
    Exit(u32),
    /// The signalfd became readable.
    Signal,
    /// A close or cancel whose completion only matters when it failed.
    Housekeeping,
    /// The multishot accept of the attach socket.
    AttachAccept,
    /// The receive of the first message of attaching peer `n`.
    AttachRecv(u32),
    /// An upgrade's successor wrote on its readiness channel (or closed it).
    SuccessorReady,
    /// An upgrade's successor's pidfd became readable: it exited.
    SuccessorExit,
    /// The loop's eventfd was written to: another thread has something for it.
    Wake,
    /// A thread worker handed connections back and wrote the eventfd saying so.
    HandedBack,
}

const SHIFT: u32 = 56;

impl Token {
    /// Packs the token: the kind in the top byte, the index below.
    pub(crate) fn encode(self) -> u64 {
        let (kind, index) = match self {
            Token::Accept(n) => (1, n),
            Token::Conn(n) => (2, n),
            Token::ChannelRecv(n) => (3, n),
            Token::ChannelSend(n) => (4, n),
            Token::Exit(n) => (5, n),
            Token::Signal => (6, 0),
            Token::Housekeeping => (7, 0),
            Token::AttachAccept => (8, 0),
            Token::AttachRecv(n) => (9, n),
            Token::SuccessorReady => (10, 0),
            Token::SuccessorExit => (11, 0),
            Token::Wake => (12, 0),
            Token::HandedBack => (13, 0),
        };
        (kind << SHIFT) | u64::from(index)
    }

    /// Unpacks a token made by [`Token::encode`].
    pub(crate) fn decode(raw: u64) -> Option<Token> {
        let index = u32::try_from(raw & ((1 << SHIFT) - 1)).ok()?;
        Some(match raw >> SHIFT {
            1 => Token::Accept(index),
            2 => Token::Conn(index),
            3 => Token::ChannelRecv(index),
            4 => Token::ChannelSend(index),
            5 => Token::Exit(index),
            6 => Token::Signal,
            7 => Token::Housekeeping,
            8 => Token::AttachAccept,
            9 => Token::AttachRecv(index),
            10 => Token::SuccessorReady,
            11 => Token::SuccessorExit,
            12 => Token::Wake,
            13 => Token::HandedBack,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Token;

    #[test]
    fn round_trip() {
        for t in [
            Token::Accept(0),
            Token::Conn(u32::MAX),
            Token::ChannelRecv(7),
            Token::ChannelSend(4095),
            Token::Exit(1),
            Token::Signal,
            Token::Housekeeping,
            Token::AttachAccept,
            Token::AttachRecv(63),
            Token::SuccessorReady,
            Token::SuccessorExit,
            Token::Wake,
            Token::HandedBack,
        ] {
            assert_eq!(Token::decode(t.encode()), Some(t));
        }
        assert_eq!(Token::decode(0), None);
    }
}
