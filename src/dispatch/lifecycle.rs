//! A worker's life in its slot: started, live, gone, retired, restarted. A dead worker's slot
//! gets a new process with the same id, at once the first time, then with an exponential
//! back-off while it keeps dying soon after its start; a crash loop is logged once per
//! back-off step, not once per death.

use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use super::slot::{Drain, Kind, Phase};
use super::{Action, Core, KILL_AFTER, Signal};
use stickyd_worker::wire::ANY_WORKER;

/// A worker that ran this long before it died is restarted at once, its back-off forgotten.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// The delay after the second death in a row; it doubles with every further one.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between restarts.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// The delay before starting a worker that died `deaths` times in a row soon after its start.
pub(crate) fn backoff(deaths: u32) -> Duration {
    match deaths {
        0 | 1 => Duration::ZERO,
        n => FIRST_DELAY
            .checked_mul(1 << (n - 2).min(16))
            .map_or(MAX_DELAY, |d| d.min(MAX_DELAY)),
    }
}

impl<C> Core<C> {
    /// The driver started slot `w`'s worker (process `pid`), as an [`Action::Spawn`] asked.
    pub fn spawned(&mut self, w: u32, pid: u32, now: Instant) {
        let slot = &mut self.slots[w as usize];
        let restart = slot.deaths > 0;
        slot.spawning = false;
        slot.kind = Kind::Process;
        slot.phase = Phase::Starting;
        slot.pid = Some(pid);
        slot.spawned_at = now;
        slot.open_channel();
        if restart {
            self.metrics.worker_restart(w);
        }
    }

    /// The driver could not start slot `w`'s worker: try again after the back-off.
    pub fn spawn_failed(&mut self, w: u32, why: &str, now: Instant) {
        let slot = &mut self.slots[w as usize];
        slot.spawning = false;
        slot.deaths = slot.deaths.saturating_add(1);
        let delay = backoff(slot.deaths);
        if delay != backoff(slot.deaths - 1) {
            warn!("cannot start worker {w}: {why}; trying again in {delay:?}");
        } else {
            debug!("cannot start worker {w}: {why}; trying again in {delay:?}");
        }
        if self.shutdown.is_none() {
            slot.respawn_at = Some(now + delay);
        }
    }

    /// Slot `w`'s worker said `HELLO` as worker `said` (process `pid`).
    pub fn hello(&mut self, w: u32, said: u32, pid: u32) {
        let slot = &mut self.slots[w as usize];
        match slot.phase {
            Phase::Starting => {}
            Phase::Live => return self.violation(w, "said HELLO twice"),
            // Exited (its pidfd came first) or refused meanwhile: nothing to welcome.
            Phase::Gone => return,
        }
        if said != w {
            warn!("worker {w} (pid {pid}) says it is worker {said}: refused");
            slot.refusal = Some(format!(
                "worker id {said} does not match the slot {w} (STICKYD_WORKER_ID)"
            ));
            slot.phase = Phase::Gone;
            return;
        }
        info!("worker {w} ready (pid {pid})");
        self.go_live(w);
    }

    /// Slot `w`'s worker, just welcomed, takes extra channels: the dispatcher threads' channels
    /// go out after its `WELCOME`.
    pub fn offer_channels(&mut self, w: u32) {
        if let Some(slot) = self.slots.get_mut(w as usize) {
            if slot.phase == Phase::Live && slot.welcome_due {
                slot.channels_due = true;
            }
        }
    }

    /// Slot `w`'s worker, just welcomed, hands kept-alive connections back when asked: `REHASH`
    /// goes out after its `WELCOME`.
    pub fn offer_rehash(&mut self, w: u32) {
        if let Some(slot) = self.slots.get_mut(w as usize) {
            if slot.phase == Phase::Live && slot.welcome_due {
                slot.rehash_due = true;
            }
        }
    }

    /// The slot an attaching worker asking for `wanted` gets: that one if it is free, or with
    /// [`ANY_WORKER`] the lowest free one; `Err` says why none.
    pub fn free_slot(&self, wanted: u32) -> Result<u32, String> {
        let workers = self.settings.workers;
        if self.shutdown.is_some() {
            return Err("stickyd is shutting down".to_owned());
        }
        if wanted == ANY_WORKER {
            return self
                .slots
                .iter()
                .find(|s| s.vacant())
                .map(|s| s.id)
                .ok_or_else(|| format!("all {workers} worker slots are taken"));
        }
        match self.slots.get(wanted as usize) {
            None => Err(format!(
                "worker id {wanted} is out of range: this stickyd has slots 0..{workers}"
            )),
            Some(slot) if !slot.vacant() => Err(format!("worker slot {wanted} is taken")),
            Some(_) => Ok(wanted),
        }
    }

    /// An attached worker (process `pid`) said `HELLO` and took slot `w`, which
    /// [`free_slot`](Self::free_slot) gave it: live, with a `WELCOME` to send.
    pub fn attached(&mut self, w: u32, pid: u32) {
        let slot = &mut self.slots[w as usize];
        debug_assert!(slot.vacant());
        slot.kind = Kind::Attached;
        slot.respawn_at = None;
        slot.open_channel();
        slot.phase = Phase::Starting;
        info!("worker {w} ready (pid {pid})");
        self.go_live(w);
    }

    fn go_live(&mut self, w: u32) {
        let shutting_down = self.shutdown.is_some();
        let slot = &mut self.slots[w as usize];
        slot.phase = Phase::Live;
        slot.welcome_due = true;
        if shutting_down {
            slot.drain = Drain::Wanted;
        }
        self.end_hold(w);
        self.actions.push_back(Action::Live(w));
        self.update_live();
        self.lift_start_hold(None);
    }

    /// Slot `w`'s process exited (`status` describes how) and was reaped.
    pub fn exited(&mut self, w: u32, status: &str, success: bool, now: Instant) {
        let shutting_down = self.shutdown.is_some();
        let slot = &mut self.slots[w as usize];
        let Some(pid) = slot.pid.take() else {
            return;
        };
        slot.kill_at = None;
        if shutting_down && !success {
            warn!("worker {w} (pid {pid}) exited: {status}");
        } else {
            // Outside a shutdown the restart's log line says it, once per back-off step.
            debug!("worker {w} (pid {pid}) exited: {status}");
        }
        slot.last_exit = Some(status.to_owned());
        self.gone(w, "exited", now);
        self.schedule_respawn(w, now);
    }

    /// Slot `w`'s process can no longer be waited for: treated as gone.
    pub fn lost(&mut self, w: u32, now: Instant) {
        let slot = &mut self.slots[w as usize];
        slot.pid = None;
        slot.kill_at = None;
        self.gone(w, "lost", now);
        self.schedule_respawn(w, now);
    }

    /// Slot `w`'s channel was read to its end.
    pub fn channel_ended(&mut self, w: u32, now: Instant) {
        let shutting_down = self.shutdown.is_some();
        let slot = &mut self.slots[w as usize];
        slot.eof = true;
        if slot.pid.is_some() && !shutting_down && slot.kill_at.is_none() {
            // A worker without its channel is of no use: end it, so that its slot gets a new
            // one.
            debug!("worker {w} closed its channel (no exit seen yet): SIGTERM");
            slot.kill_at = Some(now + KILL_AFTER);
            self.actions.push_back(Action::End(w, Signal::Term));
        }
        self.gone(w, "closed its channel", now);
        self.retire_if_done(w, now);
    }

    /// Slot `w`'s channel failed for good (not the reset of a peer that has gone, which is
    /// read to its end): what it acknowledged may still be queued unread, so none of its
    /// connections is dispatched again.
    pub fn channel_failed(&mut self, w: u32, what: &str, now: Instant) {
        self.violation(w, &format!("has a broken channel ({what})"));
        self.slots[w as usize].eof = true;
        self.retire_if_done(w, now);
    }

    /// A worker broke the protocol: it gets nothing more, and is killed so that its channel
    /// ends and what it left unacknowledged is closed.
    pub fn violation(&mut self, w: u32, what: &str) {
        error!("worker {w} {what}: ending it");
        self.slots[w as usize].violated = true;
        self.end_worker(w, Signal::Kill);
        // No hold for a worker that misbehaves: it is killed, not merely crashed; what waited
        // for it goes to the next choice now.
        if self.slots[w as usize].hold_until.is_some() {
            self.give_up_hold(w);
        }
        self.gone_now(w, "protocol violation");
    }

    /// The worker of slot `w` can no longer take connections. A live spawned worker's keys wait
    /// for its replacement (`--respawn-hold`).
    pub(super) fn gone(&mut self, w: u32, why: &str, now: Instant) {
        let hold = self.settings.respawn_hold;
        let respawned = self.spawns && self.shutdown.is_none();
        let slot = &mut self.slots[w as usize];
        if slot.phase == Phase::Live
            && slot.kind == Kind::Process
            && !slot.violated
            && respawned
            && !hold.is_zero()
        {
            slot.hold_until = Some(now + hold);
        }
        self.gone_now(w, why);
    }

    fn gone_now(&mut self, w: u32, why: &str) {
        let slot = &mut self.slots[w as usize];
        if slot.phase != Phase::Gone {
            slot.phase = Phase::Gone;
            debug!("worker {w} gone: {why}");
            self.update_live();
        }
    }

    /// Once a gone worker's channel has been read to its end and no send is in flight, its
    /// unacknowledged connections (never touched) are routed again, and the channel closed.
    pub(super) fn retire_if_done(&mut self, w: u32, now: Instant) {
        let slot = &mut self.slots[w as usize];
        if slot.phase != Phase::Gone || !slot.eof || slot.sending.is_some() || !slot.channel {
            return;
        }
        slot.channel = false;
        self.actions.push_back(Action::Retire(w));
        let violated = slot.violated;
        let sent: Vec<_> = slot.unacked.drain(..).flatten().collect();
        let unsent: Vec<_> = slot.outbox.drain(..).collect();
        slot.held = 0;
        if violated && !sent.is_empty() {
            warn!(
                "worker {w} broke the protocol: closing the {} connections it was sent",
                sent.len()
            );
            for h in sent {
                self.drop_handoff(h);
            }
        } else if !sent.is_empty() {
            warn!(
                "worker {w} left {} connections unacknowledged: dispatching them again",
                sent.len()
            );
            self.metrics.redispatched(sent.len() as u64);
            for mut h in sent {
                h.exclude = None;
                self.route(h);
            }
        }
        for mut h in unsent {
            h.exclude = None;
            self.route(h);
        }
        self.schedule_respawn(w, now);
    }

    /// Once a gone worker's process is reaped and its channel retired, schedules the next
    /// process in its slot. Never during a shutdown.
    fn schedule_respawn(&mut self, w: u32, now: Instant) {
        if !self.spawns || self.shutdown.is_some() {
            return;
        }
        let slot = &mut self.slots[w as usize];
        if !slot.vacant() || slot.respawn_at.is_some() {
            return;
        }
        if now.duration_since(slot.spawned_at) >= STABLE_AFTER {
            slot.deaths = 0;
        }
        slot.deaths = slot.deaths.saturating_add(1);
        let delay = backoff(slot.deaths);
        let how = slot
            .last_exit
            .take()
            .unwrap_or_else(|| "its channel closed".to_owned());
        if slot.deaths == 1 {
            warn!("worker {w} exited ({how}): restarting it");
        } else if delay != backoff(slot.deaths - 1) {
            let again = if delay == MAX_DELAY {
                " (and at that pace while it keeps failing)"
            } else {
                ""
            };
            warn!(
                "worker {w} exited ({how}), {} times in a row soon after starting: restarting \
                 in {delay:?}{again}",
                slot.deaths
            );
        } else {
            debug!("worker {w} exited ({how}) again: restarting in {delay:?}");
        }
        slot.respawn_at = Some(now + delay);
    }

    /// Starts the workers whose restart time has come.
    pub(super) fn respawn_due(&mut self, now: Instant) {
        if self.shutdown.is_some() {
            return;
        }
        for slot in &mut self.slots {
            if slot.respawn_at.is_some_and(|at| at <= now) && slot.vacant() {
                slot.respawn_at = None;
                slot.spawning = true;
                self.actions.push_back(Action::Spawn(slot.id));
            }
        }
    }

    /// Lifts the start hold once every slot is live, or (given `now`) once it has passed, with
    /// a warning naming the slots that are not.
    pub(super) fn lift_start_hold(&mut self, now: Option<Instant>) {
        let Some((until, how_long)) = self.start_hold else {
            return;
        };
        let missing: Vec<String> = self
            .slots
            .iter()
            .filter(|s| s.phase != Phase::Live)
            .map(|s| s.id.to_string())
            .collect();
        if missing.is_empty() {
            self.start_hold = None;
        } else if now.is_some_and(|now| now >= until) {
            self.start_hold = None;
            let live = self.slots.len() - missing.len();
            warn!(
                "{live} of {} workers ready after {how_long:?}: serving with those; worker{} {} \
                 not ready",
                self.slots.len(),
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(200));
        assert_eq!(backoff(6), Duration::from_millis(1600));
        assert_eq!(backoff(11), Duration::from_secs(30));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(30));
    }
}
