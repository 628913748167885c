//! Workers that attach: processes stickyd did not start connect to `--attach PATH`, say
//! `HELLO`, and take a free slot if their uid (`SO_PEERCRED`) may.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, warn};
use slab::Slab;
use stickyd_ring::{InMsg, OpId, sys};
use stickyd_worker::wire::{self, Message};

use super::token::Token;
use super::workers::{WorkerIo, arm_recv};
use super::{ACCEPT_BACKOFF, Error, Master, setup};
use crate::config::Config;
use crate::logging::say;

/// How long a peer that connected has to say `HELLO`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The most peers connected and not yet welcomed or refused; beyond, new ones are closed.
const MAX_ATTACHING: usize = 64;
/// The attach socket's listen backlog.
const ATTACH_BACKLOG: i32 = 64;

/// How long a successor of an upgrade waits for its predecessor's attached workers to
/// re-attach, beyond the predecessor's grace period, before it serves with the workers it has.
pub(super) const REATTACH_SLACK: Duration = Duration::from_secs(5);

/// The attach socket and its accept.
#[derive(Debug)]
pub(super) struct AttachPoint {
    path: PathBuf,
    socket: Option<OwnedFd>,
    accept: Option<OpId>,
    cancelling: bool,
    rearm_at: Option<Instant>,
    /// Uids allowed besides the master's own.
    uids: Vec<u32>,
    /// Peers that connected and have not said `HELLO` yet.
    waiting: Slab<Attaching>,
    /// A successor took the socket over: its path is the successor's now.
    pub(super) handed_over: bool,
}

/// A peer that connected and has not said `HELLO` yet.
#[derive(Debug)]
struct Attaching {
    channel: OwnedFd,
    pid: u32,
    uid: u32,
    since: Instant,
    recv: Option<OpId>,
    /// It said nothing in time: its receive is being cancelled. The entry (and its slab key,
    /// which names the receive's token) stays until that receive completes.
    timed_out: bool,
}

impl AttachPoint {
    /// Creates the socket at `config.attach`, if set: mode 0600, or 0666 when other uids may
    /// attach (their uid is checked on every connection). A successor takes its predecessor's
    /// socket (`inherited`) instead: the path stays the same, and attached workers reconnect.
    pub(super) fn open(
        config: &Config,
        inherited: Option<OwnedFd>,
    ) -> Result<Option<AttachPoint>, Error> {
        let Some(path) = &config.attach else {
            if inherited.is_some() {
                warn!(
                    "upgrade: the predecessor passed an attach socket, and --attach is gone: closed"
                );
            }
            return Ok(None);
        };
        let mode = if config.attach_uids.is_empty() {
            0o600
        } else {
            0o666
        };
        let socket = match inherited {
            Some(socket) => socket,
            None => sys::seqpacket_listener(path, mode, ATTACH_BACKLOG).map_err(setup(format!(
                "cannot create the attach socket {}",
                path.display()
            )))?,
        };
        say!("stickyd: workers attach at {}", path.display());
        Ok(Some(AttachPoint {
            path: path.clone(),
            socket: Some(socket),
            accept: None,
            cancelling: false,
            rearm_at: None,
            uids: config.attach_uids.clone(),
            waiting: Slab::new(),
            handed_over: false,
        }))
    }

    /// The socket, to pass to a successor.
    pub(super) fn socket(&self) -> Option<BorrowedFd<'_>> {
        self.socket.as_ref().map(AsFd::as_fd)
    }

    /// When something about attaching is due: an accept to arm again, a `HELLO` overdue, the
    /// end of a successor's wait for its workers.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        let hello = self
            .waiting
            .iter()
            .filter(|(_, a)| !a.timed_out)
            .map(|(_, a)| a.since + HELLO_TIMEOUT)
            .min();
        self.rearm_at.into_iter().chain(hello).min()
    }
}

impl Master {
    /// Keeps the attach socket's accept armed (outside a shutdown), and closes peers that did
    /// not say `HELLO` in time.
    pub(super) fn tend_attach(&mut self, now: Option<Instant>) {
        let shutting_down = self.core.shutting_down();
        let Some(point) = &mut self.attach else {
            return;
        };
        if let Some(now) = now {
            for (_, a) in point.waiting.iter_mut() {
                if a.timed_out || a.since + HELLO_TIMEOUT > now {
                    continue;
                }
                // Closed when its receive completes (cancelled), so that the slab key is not
                // reused while that completion can still arrive.
                a.timed_out = true;
                debug!(
                    "attach: pid {} said no HELLO within {HELLO_TIMEOUT:?}: closing",
                    a.pid
                );
                if let Some(op) = a.recv {
                    self.ring.cancel(op, Token::Housekeeping.encode());
                }
            }
        }
        let Some(socket) = &point.socket else {
            return;
        };
        if shutting_down {
            match point.accept {
                Some(op) if !point.cancelling => {
                    point.cancelling = true;
                    self.ring.cancel(op, Token::Housekeeping.encode());
                }
                Some(_) => {}
                None => point.socket = None,
            }
            return;
        }
        let due = point
            .rearm_at
            .is_none_or(|at| now.is_some_and(|now| at <= now));
        if point.accept.is_none() && due {
            point.rearm_at = None;
            point.accept = Some(
                self.ring
                    .accept_multi(socket.as_fd(), Token::AttachAccept.encode()),
            );
        }
    }

    /// A peer connected to the attach socket: note its credentials, wait for its `HELLO`.
    pub(super) fn on_attach_accept(&mut self, fd: io::Result<OwnedFd>, more: bool) {
        let closing = self.core.shutting_down();
        let Some(point) = &mut self.attach else {
            return;
        };
        if !more {
            point.accept = None;
            point.cancelling = false;
            if closing {
                point.socket = None;
            }
        }
        let channel = match fd {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => return,
            Err(e) => {
                warn!("accept on the attach socket failed: {e}");
                if !more && !closing {
                    point.rearm_at = Some(Instant::now() + ACCEPT_BACKOFF);
                }
                return;
            }
        };
        let (pid, uid, _) = match sys::peer_credentials(channel.as_fd()) {
            Ok(cred) => cred,
            Err(e) => {
                warn!("attach: {e}: closed");
                return;
            }
        };
        if point.waiting.len() >= MAX_ATTACHING {
            warn!("attach: {MAX_ATTACHING} peers are already waiting to attach: pid {pid} closed");
            return;
        }
        let entry = point.waiting.vacant_entry();
        let k = entry.key();
        let inbox = InMsg::new(wire::MAX_MESSAGE, 0);
        let recv = self
            .ring
            .recv_msg(channel.as_fd(), inbox, Token::AttachRecv(k as u32).encode());
        entry.insert(Attaching {
            channel,
            pid,
            uid,
            since: Instant::now(),
            recv: Some(recv),
            timed_out: false,
        });
    }

    /// What a connected peer said first: a `HELLO` takes a slot, or is refused with the
    /// reason; anything else closes it.
    pub(super) fn on_attach_recv(&mut self, k: usize, msg: InMsg, result: io::Result<usize>) {
        let Some(point) = &mut self.attach else {
            return;
        };
        let Some(peer) = point.waiting.try_remove(k) else {
            return;
        };
        if peer.timed_out {
            // Too late, whatever it said: closed.
            return;
        }
        let hello = match result {
            Ok(n) if n > 0 && !msg.truncated() => match wire::decode(msg.data()) {
                Ok(Message::Hello(hello)) => hello,
                Ok(other) => {
                    warn!(
                        "attach: pid {} sent {} first: closed",
                        peer.pid,
                        other.msg_type()
                    );
                    return;
                }
                Err(e) => {
                    warn!(
                        "attach: pid {} sent a malformed message ({e}): closed",
                        peer.pid
                    );
                    return;
                }
            },
            Ok(_) => {
                debug!("attach: pid {} left before HELLO", peer.pid);
                return;
            }
            Err(e) => {
                debug!("attach: pid {}: {e}", peer.pid);
                return;
            }
        };
        let own = sys::effective_uid();
        let verdict = if peer.uid != own && !point.uids.contains(&peer.uid) {
            Err(format!(
                "uid {} may not attach to this stickyd (it runs as uid {own}; --attach-uid \
                 allows others)",
                peer.uid
            ))
        } else {
            self.core.free_slot(hello.worker_id)
        };
        match verdict {
            Ok(w) => {
                let mut io = WorkerIo::channel(peer.channel);
                arm_recv(&mut self.ring, w, &mut io);
                self.io[w as usize] = io;
                debug!("worker {w} attached (uid {})", peer.uid);
                self.core.attached(w, hello.pid);
                self.offer_extras(w, hello.flags);
            }
            Err(reason) => {
                warn!(
                    "attach refused to pid {} (uid {}): {reason}",
                    peer.pid, peer.uid
                );
                let mut out = Vec::with_capacity(wire::HEADER_LEN + reason.len());
                wire::encode_refused(&reason, &mut out);
                if let Err(e) = sys::send_now(peer.channel.as_fd(), &out) {
                    debug!("attach: sending REFUSED to pid {} failed: {e}", peer.pid);
                }
                // Closing now: the peer reads REFUSED, then end of file.
            }
        }
    }

    /// Removes the attach socket's file, unless a successor took the socket over: the path is
    /// its own then.
    pub(super) fn remove_attach_path(&mut self) {
        if let Some(point) = self.attach.as_ref().filter(|p| !p.handed_over) {
            if let Err(e) = std::fs::remove_file(&point.path) {
                debug!("removing {}: {e}", point.path.display());
            }
        }
    }
}
