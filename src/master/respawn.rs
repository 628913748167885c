//! Restarting workers: a dead worker's slot gets a new process with the same id, at once the
//! first time, then with an exponential back-off while it keeps dying soon after its start.
//! A crash loop is logged once per back-off step, not once per death.

use std::time::{Duration, Instant};

use log::{debug, warn};

use super::pool::Slot;
use super::{Master, arm_exit, arm_recv, spawn};

/// A worker that ran this long before it died is restarted at once, its back-off forgotten.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// The delay after the second death in a row; it doubles with every further one.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between restarts.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// The delay before starting a worker that died `deaths` times in a row soon after its start.
pub(super) fn backoff(deaths: u32) -> Duration {
    match deaths {
        0 | 1 => Duration::ZERO,
        n => FIRST_DELAY
            .checked_mul(1 << (n - 2).min(16))
            .map_or(MAX_DELAY, |d| d.min(MAX_DELAY)),
    }
}

impl Master {
    /// Once a gone worker's process is reaped and its channel retired, schedules the next
    /// process in its slot. Never during a shutdown.
    pub(super) fn schedule_respawn(&mut self, w: u32) {
        if !self.spawns_workers() {
            return;
        }
        let slot = &mut self.slots[w as usize];
        if self.shutdown.is_some() || !slot.vacant() || slot.respawn_at.is_some() {
            return;
        }
        let now = Instant::now();
        if now.duration_since(slot.spawned_at) >= STABLE_AFTER {
            slot.deaths = 0;
        }
        slot.deaths = slot.deaths.saturating_add(1);
        let delay = backoff(slot.deaths);
        let how = slot
            .last_exit
            .take()
            .map_or_else(|| "its channel closed".to_owned(), |s| s.to_string());
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
        for w in 0..self.slots.len() {
            let slot = &self.slots[w];
            if self.shutdown.is_some() || slot.respawn_at.is_none_or(|at| at > now) {
                continue;
            }
            let id = slot.id;
            let deaths = slot.deaths;
            match spawn::spawn(id, self.config.worker_command.as_ref()) {
                Ok(worker) => {
                    // The warning that scheduled it said so already: once per back-off step.
                    debug!("worker {id} restarted (pid {})", worker.pid);
                    let mut slot = Slot::new(id, worker, deaths);
                    arm_exit(&mut self.ring, &slot);
                    arm_recv(&mut self.ring, &mut slot);
                    self.slots[w] = slot;
                    self.metrics.worker_restart(id);
                }
                Err(e) => {
                    let slot = &mut self.slots[w];
                    slot.deaths = slot.deaths.saturating_add(1);
                    let delay = backoff(slot.deaths);
                    if delay != backoff(slot.deaths - 1) {
                        warn!("cannot restart worker {id}: {e}; trying again in {delay:?}");
                    } else {
                        debug!("cannot restart worker {id}: {e}; trying again in {delay:?}");
                    }
                    slot.respawn_at = Some(now + delay);
                }
            }
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
