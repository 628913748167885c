//! Starting worker processes: one channel end inherited, their own process group, a
//! parent-death signal, and a clean environment.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use stickyd_ring::sys;

use crate::config::{Ipc, WorkerCommand};

/// The environment variable that switches the `stickyd` executable into its built-in worker.
pub const BUILTIN_WORKER_ENV: &str = "STICKYD_BUILTIN_WORKER";

/// Variables a worker must not see: they are addressed to the master.
const MASTER_ONLY_ENV: [&str; 6] = [
    super::notify::NOTIFY_SOCKET,
    super::inherit::LISTEN_PID,
    super::inherit::LISTEN_FDS,
    super::inherit::LISTEN_FDNAMES,
    super::inherit::UPGRADE_FDS,
    super::inherit::UPGRADE_FROM,
];

/// A started worker: its pid, the pidfd that becomes readable when it exits, and the master's
/// end of its channel.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub pid: u32,
    pub pidfd: OwnedFd,
    pub channel: OwnedFd,
}

/// Starts the worker of slot `id`: `command`, or the built-in hello worker (this executable,
/// through `/proc/self/exe`, so a master never mixes binaries), with a channel that speaks
/// `ipc`.
pub(crate) fn spawn(id: u32, command: Option<&WorkerCommand>, ipc: Ipc) -> io::Result<Spawned> {
    let (master_end, worker_end) = match ipc {
        Ipc::Native => sys::seqpacket_pair()?,
        Ipc::Node => sys::stream_pair()?,
    };
    let mut cmd = match command {
        Some(c) => {
            let mut cmd = Command::new(&c.program);
            cmd.args(&c.args);
            cmd
        }
        None => {
            let mut cmd = Command::new("/proc/self/exe");
            cmd.arg0(format!("stickyd-worker-{id}"))
                .env(BUILTIN_WORKER_ENV, "hello");
            cmd
        }
    };
    for var in MASTER_ONLY_ENV {
        cmd.env_remove(var);
    }
    let fd = worker_end.as_raw_fd().to_string();
    cmd.env("STICKYD_WORKER_ID", id.to_string())
        .stdin(Stdio::null());
    match ipc {
        Ipc::Native => {
            cmd.env("STICKYD_FD", fd);
        }
        Ipc::Node => {
            // A Node `cluster` worker whose channel is this socket; `cluster.worker.id` is the
            // slot's number plus one, as under Node's own cluster.
            cmd.env("NODE_CHANNEL_FD", fd)
                .env("NODE_CHANNEL_SERIALIZATION_MODE", "json")
                .env("NODE_UNIQUE_ID", (u64::from(id) + 1).to_string())
                .env("STICKYD_IPC", "node")
                .env_remove("STICKYD_FD");
        }
    }
    sys::prepare_worker_command(&mut cmd, worker_end.as_fd());
    let child = cmd.spawn()?;
    drop(worker_end);
    let pid = child.id();
    // The pid stays ours (a zombie at worst) until we reap it, so the pidfd names this child.
    let pidfd = sys::pidfd_open(pid)?;
    Ok(Spawned {
        pid,
        pidfd,
        channel: master_end,
    })
}
