//! Routing: which worker a connection goes to, and where it waits when that worker cannot
//! take it yet.

use log::warn;

use super::slot::Slot;
use super::{Core, Handoff};
use crate::route;

/// Where a connection goes.
enum Place {
    /// The outbox of this live worker.
    Send(u32),
    /// This dead worker's queue of connections waiting for its replacement.
    Wait(u32),
    /// Nowhere yet: it waits in the master for room.
    Park,
    /// Nowhere ever: closed.
    Close(&'static str),
}

impl<C> Core<C> {
    /// Puts a connection where its key says: see the [module](super) documentation.
    pub(super) fn route(&mut self, h: Handoff<C>) {
        match self.place(&h) {
            Place::Send(w) => {
                let slot = &mut self.slots[w as usize];
                slot.held += 1;
                slot.outbox.push_back(h);
            }
            Place::Wait(w) => self.slots[w as usize].waiting.push(h),
            Place::Park => self.parked.push(h),
            Place::Close(why) => {
                warn!("the connection from {} {why}: closed", h.rec.peer);
                self.drop_handoff(h);
            }
        }
    }

    fn place(&self, h: &Handoff<C>) -> Place {
        let exclude = h.exclude;
        let hash = h.rec.key_hash;
        let max_queue = self.max_queue();
        let slots = &self.slots;
        let allowed = |w: &u32| Some(*w) != exclude;
        if self.shutdown.is_some() && slots.iter().any(Slot::returnable) {
            // Connections handed back by workers that had not read their DRAIN yet: to the
            // key's worker among those whose channels are still open (all of them, until every
            // one has said DRAINED), as before the shutdown.
            let open = slots.iter().filter(|s| s.routable() || s.returnable());
            return match route::pick(hash, open.map(|s| s.id).filter(allowed)) {
                Some(w) => Place::Send(w),
                None => Place::Close("cannot go to any worker"),
            };
        }
        let live = || self.live.iter().copied().filter(allowed);
        let awaited = slots.iter().filter(|s| s.holding()).map(|s| s.id);
        // The first choice among the live workers and those whose replacement is awaited.
        let first = route::pick(hash, live().chain(awaited.filter(allowed)));
        match first {
            Some(w) if slots[w as usize].routable() && slots[w as usize].held < max_queue => {
                return Place::Send(w);
            }
            Some(w)
                if slots[w as usize].holding() && slots[w as usize].waiting.len() < max_queue =>
            {
                return Place::Wait(w);
            }
            _ => {}
        }
        // Its first choice cannot take it: the next live one by rank that has room.
        let spill = route::pick(hash, live().filter(|&w| slots[w as usize].held < max_queue));
        if let Some(w) = spill {
            if first.is_some() {
                self.metrics.spill();
            }
            return Place::Send(w);
        }
        if exclude.is_some() && self.live.iter().all(|&w| Some(w) == exclude) && first.is_none() {
            // The worker that returned it is the only one left: nowhere else to go.
            return Place::Close("was returned by the only live worker");
        }
        let starting = slots
            .iter()
            .any(|s| s.spawning || s.phase == super::Phase::Starting);
        if self.shutdown.is_none() || !self.live.is_empty() || starting {
            // Every live worker is at its bound, or none is live yet: wait for room.
            Place::Park
        } else {
            Place::Close("cannot go to any worker")
        }
    }

    /// Whether some live worker can take one more connection.
    /// How slot `w` stands for routing, for the dispatcher threads' own channels: `None` if
    /// it is not a candidate for any key; `Some(true)` if it is live and a connection whose
    /// first choice it is goes straight to it; `Some(false)` if its keys wait for its
    /// replacement.
    pub fn standing(&self, w: u32) -> Option<bool> {
        let slot = self.slots.get(w as usize)?;
        if slot.routable() {
            Some(true)
        } else if slot.holding() {
            Some(false)
        } else {
            None
        }
    }

    pub(super) fn room(&self) -> bool {
        let max_queue = self.max_queue();
        self.live
            .iter()
            .any(|&w| self.slots[w as usize].held < max_queue)
    }

    /// Routes the connections that waited for room or for a live worker, if there is any now.
    pub(super) fn unpark(&mut self) {
        if self.parked.is_empty() || !self.room() {
            return;
        }
        for h in std::mem::take(&mut self.parked) {
            self.route(h);
        }
    }

    /// Slot `w`'s worker is live again: the connections that waited for it are its own.
    pub(super) fn end_hold(&mut self, w: u32) {
        let slot = &mut self.slots[w as usize];
        slot.hold_until = None;
        let waiting = std::mem::take(&mut slot.waiting);
        slot.held += waiting.len();
        slot.outbox.extend(waiting);
    }

    /// Slot `w`'s replacement did not come in time (or never will: a shutdown): its keys go to
    /// their next choice.
    pub(super) fn give_up_hold(&mut self, w: u32) {
        let slot = &mut self.slots[w as usize];
        slot.hold_until = None;
        let waiting = std::mem::take(&mut slot.waiting);
        if self.shutdown.is_none() {
            warn!(
                "worker {w} was not back within {:?}: its keys go to other workers until it is{}",
                self.settings.respawn_hold,
                if waiting.is_empty() {
                    String::new()
                } else {
                    format!(" ({} connections waited for it)", waiting.len())
                }
            );
        }
        for h in waiting {
            self.route(h);
        }
    }
}
