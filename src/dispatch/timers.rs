//! Time and the shutdown: when the core wants to be woken, what is due then, and how a
//! shutdown proceeds from the signal to the last worker's exit.

use std::time::Instant;

use log::warn;

use super::slot::{Drain, Phase};
use super::{Action, Core, KILL_AFTER, Shutdown, Signal};

impl<C> Core<C> {
    /// A shutdown was asked for at `now` (SIGTERM, SIGINT, or a successor took over): no more
    /// restarts, every connection accepted is still routed (the driver stops accepting), and
    /// each worker is drained once nothing more can reach it. A second request ends the
    /// workers at once.
    pub fn shut_down(&mut self, now: Instant) {
        if self.shutdown.is_some() {
            for w in 0..self.settings.workers {
                self.end_worker(w, Signal::Kill);
            }
            return;
        }
        self.shutdown = Some(Shutdown {
            term_at: None,
            backstop: now + self.settings.peek_timeout + self.settings.grace,
            kill_at: None,
        });
        self.start_hold = None;
        for slot in &mut self.slots {
            // No restart during a shutdown.
            slot.respawn_at = None;
            if slot.phase != Phase::Gone {
                slot.drain = Drain::Wanted;
            }
        }
        // No replacement comes: what waited for one goes to the workers still live.
        for w in 0..self.settings.workers {
            if self.slots[w as usize].hold_until.is_some() {
                self.give_up_hold(w);
            }
        }
        for h in std::mem::take(&mut self.parked) {
            self.route(h);
        }
    }

    /// After the driver's sends: once nothing more can be routed during a shutdown, the grace
    /// period starts.
    pub fn flushed(&mut self, routing_done: bool, now: Instant) {
        let grace = self.settings.grace;
        if let Some(shutdown) = &mut self.shutdown {
            if routing_done && shutdown.term_at.is_none() {
                shutdown.term_at = Some(now + grace);
            }
        }
    }

    /// When the core wants to be woken next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let shutting_down = self.shutdown.is_some();
        let channels = self
            .slots
            .iter()
            .filter(|s| !s.eof && s.channel)
            .filter_map(|s| s.retry_at);
        let restarts = self
            .slots
            .iter()
            .filter(|_| !shutting_down)
            .filter_map(|s| s.respawn_at);
        let kills = self
            .slots
            .iter()
            .filter(|s| s.pid.is_some())
            .filter_map(|s| s.kill_at);
        let holds = self.slots.iter().filter_map(|s| s.hold_until);
        let backstop = self
            .shutdown
            .as_ref()
            .filter(|s| s.term_at.is_none())
            .map(|s| s.backstop);
        let shutdown = self.shutdown.as_ref().and_then(|s| s.kill_at.or(s.term_at));
        channels
            .chain(restarts)
            .chain(kills)
            .chain(holds)
            .chain(self.start_hold.map(|(at, _)| at))
            .chain(backstop)
            .chain(shutdown)
            .min()
    }

    /// Does what is due at `now`.
    pub fn on_timer(&mut self, now: Instant) {
        self.respawn_due(now);
        for w in 0..self.settings.workers {
            if self.slots[w as usize]
                .hold_until
                .is_some_and(|at| at <= now)
            {
                self.give_up_hold(w);
            }
        }
        self.lift_start_hold(Some(now));
        for w in 0..self.settings.workers {
            let slot = &mut self.slots[w as usize];
            if slot.kill_at.is_some_and(|at| at <= now) {
                slot.kill_at = None;
                if let Some(pid) = slot.pid {
                    warn!("worker {w} (pid {pid}) did not exit: SIGKILL");
                    self.actions.push_back(Action::End(w, Signal::Kill));
                }
            }
        }
        self.unpark();
        self.backstop(now);
        let Some(shutdown) = &mut self.shutdown else {
            return;
        };
        let signal = match shutdown.kill_at {
            None if shutdown.term_at.is_some_and(|at| now >= at) => Signal::Term,
            Some(at) if now >= at => Signal::Kill,
            _ => return,
        };
        shutdown.kill_at = Some(now + KILL_AFTER);
        let left = self.slots.iter().filter(|s| !s.exited()).count();
        if left == 0 {
            return;
        }
        match signal {
            Signal::Term => warn!("grace period over: SIGTERM to {left} workers"),
            Signal::Kill => warn!("SIGKILL to {left} workers still running"),
        }
        for w in 0..self.settings.workers {
            self.end_worker(w, signal);
        }
    }

    /// Ends a shutdown whose routing did not finish in time: closes what is left and lets the
    /// workers be signalled.
    fn backstop(&mut self, now: Instant) {
        let Some(shutdown) = &mut self.shutdown else {
            return;
        };
        if shutdown.term_at.is_some() || now < shutdown.backstop {
            return;
        }
        shutdown.term_at = Some(now);
        self.actions.push_back(Action::Abandon);
        let waiting = self.waiting();
        if waiting > 0 {
            warn!("{waiting} connections waiting for a worker when the grace period ended: closed");
        }
        for h in std::mem::take(&mut self.parked) {
            self.drop_handoff(h);
        }
        for w in 0..self.settings.workers {
            for h in std::mem::take(&mut self.slots[w as usize].waiting) {
                self.drop_handoff(h);
            }
        }
    }
}
