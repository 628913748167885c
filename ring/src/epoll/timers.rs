//! Timers: a binary heap of deadlines, earliest first.
//!
//! A cancelled timer is not searched for in the heap: its entry stays until it comes to the
//! top, where the loop finds its operation gone and skips it. When such dead entries outnumber
//! the live ones, the heap is rebuilt without them, so a program that keeps arming and
//! cancelling long timers holds memory for the timers it has, not for the ones it had.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::op_id::OpId;

/// Dead entries tolerated before a rebuild is considered.
const SLACK: usize = 64;

/// The pending timers.
#[derive(Default)]
pub(crate) struct Timers {
    /// (deadline, arming order, the operation's id as user_data), earliest deadline on top;
    /// equal deadlines fire in the order they were armed.
    heap: BinaryHeap<Reverse<(Instant, u64, u64)>>,
    armed: u64,
    /// Entries whose operation was cancelled.
    dead: usize,
}

impl Timers {
    /// Arms the timer of `op` for `at`.
    pub(crate) fn push(&mut self, at: Instant, op: OpId) {
        self.armed = self.armed.wrapping_add(1);
        self.heap.push(Reverse((at, self.armed, op.user_data())));
    }

    /// Notes that a timer was cancelled; rebuilds the heap without the timers for which
    /// `live` says no when the dead entries are the majority.
    pub(crate) fn cancelled(&mut self, live: impl Fn(OpId) -> bool) {
        self.dead += 1;
        if self.dead > SLACK && self.dead * 2 > self.heap.len() {
            self.heap
                .retain(|Reverse((_, _, op))| live(OpId::from_user_data(*op)));
            self.dead = 0;
        }
    }

    /// The earliest deadline of a live timer, dropping dead entries from the top.
    pub(crate) fn next(&mut self, live: impl Fn(OpId) -> bool) -> Option<Instant> {
        while let Some(Reverse((at, _, op))) = self.heap.peek() {
            if live(OpId::from_user_data(*op)) {
                return Some(*at);
            }
            self.heap.pop();
            self.dead = self.dead.saturating_sub(1);
        }
        None
    }

    /// The next timer due at `now` (live or not: the caller checks), in deadline order.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<OpId> {
        let Reverse((at, _, _)) = self.heap.peek()?;
        if *at > now {
            return None;
        }
        let Reverse((_, _, op)) = self.heap.pop()?;
        Some(OpId::from_user_data(op))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn due_timers_come_out_in_deadline_then_arming_order() {
        let mut timers = Timers::default();
        let now = Instant::now();
        let (a, b, c) = (OpId::new(0, 1), OpId::new(1, 2), OpId::new(2, 3));
        timers.push(now + Duration::from_secs(9), a);
        timers.push(now, b);
        timers.push(now, c);
        assert_eq!(timers.next(|_| true), Some(now));
        assert_eq!(timers.pop_due(now), Some(b));
        assert_eq!(timers.pop_due(now), Some(c));
        assert_eq!(timers.pop_due(now), None);
        assert_eq!(timers.next(|_| true), Some(now + Duration::from_secs(9)));
    }

    #[test]
    fn cancelled_timers_are_dropped_from_the_heap() {
        let mut timers = Timers::default();
        let later = Instant::now() + Duration::from_secs(3600);
        for key in 0..1000 {
            timers.push(later, OpId::new(key, 1));
        }
        for _ in 0..1000 {
            timers.cancelled(|_| false);
        }
        assert!(timers.heap.len() < 1000, "rebuilt");
        assert_eq!(timers.next(|_| false), None);
        assert!(timers.heap.is_empty());
    }
}
