//! The I/O of `--ipc node`: reading what Node workers write on their IPC channel and telling
//! the core what it means; the few lines stickyd writes there on its own (answers to
//! `server.listen()` in a worker). The lines themselves are [`crate::node_ipc`]'s.

use log::{debug, info, warn};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use stickyd_ring::{InMsg, sys};

use super::Master;
use crate::node_ipc::{FromNode, Lines};

/// The receive buffer of a Node channel (a stream: lines may span reads).
pub(super) const RECV_BUF: usize = 64 * 1024;

/// Handles a Node worker may have sent ahead of their `NODE_HANDLE` lines. Node sends one and
/// waits for its answer before the next, so more is a worker that does not speak Node's
/// protocol.
const MAX_HANDLES_AHEAD: usize = 8;

/// What the master keeps of a Node worker's channel besides the core's view.
#[derive(Debug, Default)]
pub(super) struct NodeChannel {
    /// The bytes received, cut into lines.
    pub lines: Lines,
    /// Lines of stickyd's own to write when no send is in flight (a stream: two writers must
    /// not interleave).
    pub control: VecDeque<Vec<u8>>,
    /// Its first message of the application's own has been logged.
    told_user: bool,
    /// It wrote what no Node worker would: nothing more of it is read.
    broken: bool,
    /// The handles received and not yet matched with their `NODE_HANDLE` line, oldest first
    /// (`None`: one the kernel dropped on its way in). An fd comes with the first byte of its
    /// `sendmsg`, so no later than its line; each line takes the oldest, as Node's own
    /// receiving side does.
    handles: VecDeque<Option<OwnedFd>>,
}

impl NodeChannel {
    /// Writes the pending control lines, as far as the socket takes them without waiting.
    /// Call only while no send of the core's is in flight on `channel`.
    pub fn send_control(&mut self, w: u32, channel: BorrowedFd<'_>) {
        while let Some(line) = self.control.front_mut() {
            match sys::send_now(channel, line) {
                Ok(n) if n == line.len() => {
                    self.control.pop_front();
                }
                // The rest goes next time.
                Ok(n) => {
                    line.drain(..n);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!("worker {w}: writing on its channel failed: {e}");
                    self.control.clear();
                    return;
                }
            }
        }
    }
}

impl Master {
    /// Node worker `w` wrote on its channel (`msg`, `n` bytes).
    pub(super) fn on_node_recv(&mut self, w: u32, msg: &mut InMsg) {
        let io = &mut self.io[w as usize];
        let pid = io.pid.unwrap_or(0);
        let truncated = msg.ctrl_truncated();
        let fds = msg.take_fds();
        let Some(node) = io.node.as_mut().filter(|n| !n.broken) else {
            return;
        };
        node.handles.extend(fds.into_iter().map(Some));
        if truncated {
            node.handles.push_back(None);
        }
        if node.handles.len() > MAX_HANDLES_AHEAD {
            node.broken = true;
            let what = format!("sent {} handles without their lines", node.handles.len());
            node.handles.clear();
            return self.core.violation(w, &what);
        }
        node.lines.push(msg.data());
        let mut close_asked = None;
        let mut handed_back = Vec::new();
        while let Some(message) = node.lines.next_message() {
            match message {
                Ok(FromNode::Ready) => self.core.hello(w, w, pid),
                Ok(FromNode::Online) => {
                    debug!("worker {w} (pid {pid}): Node is online; ready once it listens");
                }
                Ok(FromNode::HandleAck) => self.core.ack_oldest(w, true),
                Ok(FromNode::HandleNack) => self.core.ack_oldest(w, false),
                Ok(FromNode::QueryServer { seq, port, data }) => {
                    warn!(
                        "worker {w} called server.listen({}) itself: refused (ENOTSUP); under \
                         stickyd the master listens, and the application hands its server to \
                         require('stickyd').listen(server, port)",
                        port.map_or_else(|| "?".to_owned(), |p| p.to_string())
                    );
                    node.control
                        .push_back(crate::node_ipc::refuse_listen(seq, &data));
                }
                Ok(FromNode::MasterClose { wait }) => close_asked = Some(wait),
                Ok(FromNode::Cluster(act)) => {
                    // `listening`, `close`, `exitedAfterDisconnect`: the worker's own cluster
                    // bookkeeping, answered by nobody under stickyd (none waits for an answer).
                    debug!("worker {w}: cluster message '{act}' (nothing to do)");
                }
                Ok(FromNode::Handle) => {
                    let arrived = node.handles.pop_front().flatten().is_some();
                    node.control
                        .push_back(crate::node_ipc::handle_answer(arrived));
                    warn!(
                        "worker {w} sent stickyd a handle (process.send(message, handle)): \
                         closed, not taken"
                    );
                }
                Ok(FromNode::HandBack { listener }) => {
                    let fd = node.handles.pop_front().flatten();
                    node.control
                        .push_back(crate::node_ipc::handle_answer(fd.is_some()));
                    // Without its fd, Node sends it again (NACK).
                    if let Some(fd) = fd {
                        handed_back.push((listener, fd));
                    }
                }
                Ok(FromNode::User) => {
                    if !node.told_user {
                        node.told_user = true;
                        info!(
                            "worker {w} sent a message of its own (process.send): stickyd does \
                             not use them, and ignores this one and the next"
                        );
                    }
                }
                Err(e) => {
                    // A worker that writes what no Node worker would: ended (and restarted);
                    // nothing more of its channel is read.
                    node.broken = true;
                    self.core.violation(w, &e.to_string());
                    break;
                }
            }
        }
        for (listener, fd) in handed_back {
            if !self.take_back(w, listener, fd) {
                break;
            }
        }
        if let Some(wait) = close_asked {
            if self.core.shutting_down() {
                debug!("worker {w} asked for a shutdown (sticky:masterclose): already under way");
            } else {
                let why =
                    format!("worker {w} asked for a shutdown (sticky:masterclose, wait {wait})");
                self.note_shutdown("sticky:masterclose");
                self.begin_shutdown(&why);
            }
        }
    }

    /// Writes the Node channels' pending control lines where no send is in flight.
    pub(super) fn send_node_control(&mut self) {
        for (w, io) in (0..).zip(self.io.iter_mut()) {
            if let (Some(node), Some(channel), Some(_)) = (&mut io.node, &io.channel, &io.msg) {
                if !node.control.is_empty() {
                    node.send_control(w, channel.as_fd());
                }
            }
        }
    }
}
