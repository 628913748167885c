//! Connections the master has accepted but not yet routed: a small record each (the bytes wait
//! in the kernel's socket queue), and their peek deadlines.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Instant;

use slab::Slab;
use stickyd_ring::OpId;

/// One connection whose key is still being looked for.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Distinguishes this connection from earlier ones that used the same slab key.
    pub id: u64,
    pub fd: OwnedFd,
    pub listener: u16,
    pub peer: SocketAddr,
    pub accepted_ns: u64,
    /// The one operation in flight for this connection (a peek or a poll), if any.
    pub op: Option<OpId>,
    /// The operation in flight is a poll (cancelled at the deadline).
    pub polling: bool,
    /// The `SO_RCVLOWAT` currently set on the socket (1 is the kernel's default).
    pub lowat: u32,
    /// The peek deadline has passed.
    pub expired: bool,
    /// The client closed or half-closed: its bytes can no longer grow.
    pub hup: bool,
    /// The peek deadline, counted from accept.
    pub deadline: Instant,
    /// The deadline is in the timer heap (only connections that had to wait are).
    pub timed: bool,
    /// A kept-alive connection a worker handed back: nothing at its deadline means an idle
    /// connection, closed, not a client to route by the fallback.
    pub kept_alive: bool,
}

/// The table of pending connections, keyed by slab index.
#[derive(Debug, Default)]
pub(crate) struct Conns {
    slab: Slab<Conn>,
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    next_id: u64,
}

impl Conns {
    /// Adds a connection with its deadline; returns its key.
    pub fn insert(
        &mut self,
        fd: OwnedFd,
        listener: u16,
        peer: SocketAddr,
        accepted_ns: u64,
        deadline: Instant,
        kept_alive: bool,
    ) -> usize {
        self.next_id += 1;
        let id = self.next_id;
        self.slab.insert(Conn {
            id,
            fd,
            listener,
            peer,
            accepted_ns,
            op: None,
            polling: false,
            lowat: 1,
            expired: false,
            hup: false,
            deadline,
            timed: false,
            kept_alive,
        })
    }

    /// Starts the deadline timer of a connection that has to wait for more bytes. Connections
    /// routed by their first peek never enter the heap.
    pub fn time(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            if !conn.timed {
                conn.timed = true;
                self.deadlines.push(Reverse((conn.deadline, key, conn.id)));
            }
        }
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut Conn> {
        self.slab.get_mut(key)
    }

    pub fn remove(&mut self, key: usize) -> Option<Conn> {
        self.slab.try_remove(key)
    }

    /// The keys of every pending connection.
    pub fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.slab.iter().map(|(key, _)| key)
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The earliest deadline of a connection still waiting. Entries of connections routed or
    /// closed since are dropped on the way: the loop never wakes up for them (under load they
    /// are most of the heap, and each would otherwise cost a wake-up at its deadline).
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, key, id))) = self.deadlines.peek() {
            if self
                .slab
                .get(key)
                .is_some_and(|conn| conn.id == id && !conn.expired)
            {
                return Some(at);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Marks every connection whose deadline is at or before `now` as expired and returns their
    /// keys (those that need their poll cancelled are the ones with `polling` set).
    pub fn expire(&mut self, now: Instant, expired: &mut Vec<usize>) {
        while let Some(&Reverse((at, key, id))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if let Some(conn) = self.slab.get_mut(key) {
                if conn.id == id && !conn.expired {
                    conn.expired = true;
                    expired.push(key);
                }
            }
        }
    }
}
