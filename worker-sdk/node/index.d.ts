// Types of the `stickyd` npm package: Node workers behind `stickyd --ipc node`, with
// sticky-session-custom's `listen(server, port, hostname, options)`.

import type { Server, Socket } from 'net';

/**
 * sticky-session-custom's options. Under stickyd they choose nothing: stickyd's command line
 * does what they did in sticky-session's master. Each one given is named once on stderr (by
 * worker 0) with the flag that replaces it; none is an error.
 */
export interface ListenOptions {
  /** stickyd's `--workers N`. */
  workers?: number;
  /** stickyd's `--key header:NAME` (`--key header:x-forwarded-for` for 'x-forwarded-for'). */
  proxyHeader?: string | null;
  /**
   * Not called: a key rule replaces it (`--key query:NAME`, `--key cookie:NAME`,
   * `--key header:NAME`), or a custom key function in Rust.
   */
  generatePrehashArray?: ((req: any, socket: Socket) => number[]) | null;
  /** Not called: stickyd's `--key ip` (its default). */
  generatePrehashArrayNoParsing?: ((socket: Socket) => number[]) | null;
  /** Every stickyd listener shares the one pool of workers; `true` has no equivalent. */
  dontUseExistingWorkers?: boolean;
}

/** A listener of the stickyd master, from its welcome. */
export interface Listener {
  /** `l0`, `l1`, ... or the name given in `--listen NAME=ADDR`. */
  name: string;
  /** The address it is bound to. */
  address: string;
  /** Its port (the real one when stickyd was asked for port 0). */
  port: number;
}

/** What stickyd said about a connection it handed to this worker. */
export interface ConnectionInfo {
  /** The connection's sequence number on this worker's channel. */
  seq: number;
  /** The name of the listener that accepted it. */
  listener: string;
  /** That listener's index in `listeners()`. */
  index: number;
  /** That listener's port: the connection went to the server registered for it. */
  port: number;
  /** The client's address: the PROXY header's with `--proxy-protocol`, else the TCP peer. */
  address: string;
  /** The client's port (likewise). */
  remotePort: number;
  /** The key's hash that chose the worker, 16 hex digits. */
  hash: string;
  /**
   * Bytes of PROXY header stickyd left at the start of the stream; the package consumed them
   * before the server read anything, and set `socket.remoteAddress`/`remotePort`/
   * `remoteFamily` to the client's.
   */
  proxyLen: number;
}

/**
 * sticky-session-custom's `listen(server, port, hostname, options)`.
 *
 * Under stickyd (`STICKYD_IPC=node`, set by `stickyd --ipc node`): every connection stickyd
 * accepts on a listener whose port is `port` is emitted on `server` ('connection'), as if the
 * server had accepted it. `hostname` is not used (stickyd's `--listen` decides the address).
 * A connection that arrives before a server is registered for its port waits up to 10 s for
 * one. Returns `false`: every process is a worker (there is no master in Node), and the
 * server never emits 'listening' in a worker, as with sticky-session.
 *
 * Without stickyd: prints one line saying how to start the app with stickyd and exits the
 * process with status 2; unless `STICKYD_STANDALONE=1`, with which it calls
 * `server.listen(port, hostname)` in this one process (where `cluster.worker` is null) and
 * returns `false`.
 */
export function listen(
  server: Server,
  port: number | string,
  hostname?: string | null,
  options?: ListenOptions | null,
): false;
export function listen(server: Server, port: number | string, options?: ListenOptions | null): false;

/**
 * Asks stickyd for a graceful shutdown of the whole pool:
 * `process.send(['sticky:masterclose', wait])`. stickyd stops accepting, routes what it has
 * accepted, drains every worker (each gets `process.emit('SIGINT')` if it listens for SIGINT,
 * else `process.exit()`), and exits 0. Returns whether the message was sent. Standalone, it
 * closes the servers registered in this process.
 */
export function close(wait?: boolean): boolean;

/** stickyd's listeners, or null before its welcome (or outside stickyd). */
export function listeners(): Listener[] | null;

/** This worker's slot (0-based; `cluster.worker.id` is slot + 1) and the pool's size. */
export function pool(): { worker: number; workers: number } | null;

/** What stickyd said about `socket`, or undefined for a socket it did not hand over. */
export function connectionInfo(socket: Socket): ConnectionInfo | undefined;

/** Whether this process was started by `stickyd --ipc node`. */
export const underStickyd: boolean;
