#!/usr/bin/env python3
"""Soak test of stickyd: a mixed load while workers are killed and stalled at random.

    scripts/soak.py --seconds 300 --stickyd target/release/stickyd

Starts stickyd with four built-in hello workers, routing by X-Forwarded-For, and for the
given time runs, on loopback only and with bounded concurrency:

- keep-alive clients: several requests per connection; each answered 200 by one worker;
- new-connection clients: one request per connection with a varying X-Forwarded-For; one
  value always reaches the same worker unless that worker was down or stalled at the time;
- slow clients: the end of the headers trickled a byte every 100-500 ms, often past the
  2 s peek deadline; still answered 200;
- garbage: random bytes, NUL, invalid UTF-8, TLS and HTTP/2 bytes, 20 KB header lines, ...;
- resets: connect and close, or reset (SO_LINGER 0) at random points;

while every few seconds a worker is SIGKILLed (the master restarts it) or SIGSTOPped for
0.5-3 s. Afterwards it checks that every good request was answered (a request that dies
with a worker killed within the 2 s before is counted apart: the connection was that
worker's), that the master's fd count and RSS are back near their baseline, that SIGTERM
stops it with exit 0, and that no worker process is left. Exit 0 when every check passed.
Python 3.11 standard library only.
"""

import argparse
import asyncio
import contextlib
import dataclasses
import os
import random
import re
import signal
import socket
import struct
import sys
import tempfile
import time
from collections import Counter

WORKERS = 4
PEEK_TIMEOUT = 2.0
MAX_QUEUE = 256
GRACE = 10.0
# Longer than the longest stall: a stalled worker answers late, not never.
GOOD_TIMEOUT = 10.0
# A good request failing within this long after a SIGKILL died with that worker.
KILL_EXCUSE = 2.0
# Slack around a worker's down or stalled interval when judging stickiness.
STICKY_MARGIN = 0.5
FD_MARGIN = 4
RSS_MARGIN = 8 * 1024 * 1024
SETTLE = 10.0
# Client tasks per class: a few dozen connections at most at any moment.
CONCURRENCY = {"keepalive": 8, "new": 8, "slow": 12, "garbage": 4, "reset": 4}
SOURCES = [f"127.0.0.{i}" for i in range(1, 17)]
GOOD_CLASSES = ("keepalive", "new", "slow")

READY = re.compile(r"worker (\d+) ready \(pid (\d+)\)")
EXITED = re.compile(r"worker (\d+) exited \(")
LISTENING = re.compile(r"stickyd: listening on (\S+):(\d+) ")
METRICS_ON = re.compile(r"stickyd: metrics on (\S+):(\d+)")
SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')


class BadResponse(Exception):
    """A response that no correct stickyd and worker would send."""


# ---- the master process --------------------------------------------------------------------


def proc_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name (index 0 is field 3, the state)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def proc_cpu_seconds(pid):
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(ppid):
    """(pid, start time) of every process whose parent is ppid."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = proc_stat(name)
            if int(fields[1]) == ppid:
                found.append((int(name), fields[19]))
    return found


def alive(pid):
    try:
        return proc_stat(pid)[0] != "Z"
    except OSError:
        return False


def still_running(pid, start):
    """The process pid started at start is alive (not gone, not a zombie, not reused)."""
    try:
        fields = proc_stat(pid)
    except OSError:
        return False
    return fields[19] == start and fields[0] != "Z"


@dataclasses.dataclass
class Interval:
    start: float
    end: float | None = None  # open while the worker is still down or stalled


class Workers:
    """The worker slots as the master reports them, and what the soak did to them."""

    def __init__(self):
        self.pids = {}  # slot -> pid, while ready
        self.ready_event = asyncio.Event()
        self.down = {slot: [] for slot in range(WORKERS)}  # killed or exited, until ready
        self.stalled = {slot: [] for slot in range(WORKERS)}
        self.kill_times = []
        self.kills = 0
        self.stalls = 0
        self.exits_seen = 0

    def on_ready(self, slot, pid):
        self.pids[slot] = pid
        for iv in self.down.get(slot, []):
            if iv.end is None:
                iv.end = time.monotonic()
        if len(self.pids) == WORKERS:
            self.ready_event.set()

    def on_exit(self, slot):
        self.exits_seen += 1
        self.mark_down(slot)

    def mark_down(self, slot):
        self.pids.pop(slot, None)
        intervals = self.down.setdefault(slot, [])
        if not intervals or intervals[-1].end is not None:
            intervals.append(Interval(time.monotonic()))

    def pickable(self):
        """Slots with a ready worker that is not stalled now."""
        return [
            s for s, pid in self.pids.items()
            if not any(iv.end is None for iv in self.stalled[s])
        ]

    def kill(self, slot):
        pid = self.pids.get(slot)
        if pid is None:
            return
        self.mark_down(slot)
        self.kill_times.append(time.monotonic())
        self.kills += 1
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    async def stall(self, slot, seconds):
        pid = self.pids.get(slot)
        if pid is None:
            return
        iv = Interval(time.monotonic())
        self.stalled[slot].append(iv)
        self.stalls += 1
        try:
            os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(seconds)
        except ProcessLookupError:
            pass
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            iv.end = time.monotonic()

    def killed_recently(self, at):
        return any(at - KILL_EXCUSE <= k <= at for k in self.kill_times)

    def disturbances(self):
        """Per slot, the (start, end) spans, widened by STICKY_MARGIN, in which its worker
        was down or stalled."""
        return {
            slot: [(iv.start - STICKY_MARGIN,
                    (iv.end if iv.end is not None else float("inf")) + STICKY_MARGIN)
                   for iv in self.down[slot] + self.stalled[slot]]
            for slot in range(WORKERS)
        }


class Master:
    """The stickyd process: its stderr goes to a log file and is watched for events."""

    def __init__(self, binary, log_path, workers, backend="auto", threads=1):
        self.binary = binary
        self.backend = backend
        self.threads = threads
        self.log_path = log_path
        self.workers = workers
        self.proc = None
        self.listen = None
        self.metrics = None
        self.error_lines = []
        self._addresses = asyncio.Event()
        self._reader = None

    async def start(self):
        self.log = open(self.log_path, "wb")
        self.proc = await asyncio.create_subprocess_exec(
            self.binary,
            "--listen", "127.0.0.1:0",
            "--workers", str(WORKERS),
            "--key", "header:x-forwarded-for",
            "--metrics", "127.0.0.1:0",
            "--peek-timeout", f"{int(PEEK_TIMEOUT)}s",
            "--max-queue", str(MAX_QUEUE),
            "--backend", self.backend,
            "--threads", str(self.threads),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self.log,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read_stderr())
        async with asyncio.timeout(20):
            await self._addresses.wait()
            await self.workers.ready_event.wait()

    async def _read_stderr(self):
        listen = metrics = None
        while line := await self.proc.stderr.readline():
            self.log.write(line)
            self.log.flush()
            text = line.decode("utf-8", "replace").rstrip("\n")
            if m := READY.search(text):
                self.workers.on_ready(int(m[1]), int(m[2]))
            elif m := EXITED.search(text):
                self.workers.on_exit(int(m[1]))
            elif m := LISTENING.search(text):
                listen = (m[1], int(m[2]))
            elif m := METRICS_ON.search(text):
                metrics = (m[1], int(m[2]))
            if ": error: " in text or "panicked" in text:
                self.error_lines.append(text)
            if listen and metrics and not self._addresses.is_set():
                self.listen, self.metrics = listen, metrics
                self._addresses.set()

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.returncode is None

    async def scrape(self):
        """The /metrics samples, as {name: {labels: value}}."""
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection(*self.metrics)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            data = await reader.read()
            writer.close()
        samples = {}
        for line in data.split(b"\r\n\r\n", 1)[-1].decode().splitlines():
            if m := SAMPLE.match(line):
                samples.setdefault(m[1], {})[m[2] or ""] = float(m[3])
        return samples

    async def stop(self):
        """SIGTERM; the exit code, or None if it outlived its grace (then it is killed)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(GRACE + 2 + 3):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return None
        finally:
            await self.close_log()

    async def close_log(self):
        if self._reader:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(2):
                    await self._reader
            self._reader.cancel()
        self.log.close()


# ---- the statistics ------------------------------------------------------------------------


@dataclasses.dataclass
class Stats:
    workers: Workers
    made: Counter = dataclasses.field(default_factory=Counter)
    answered: Counter = dataclasses.field(default_factory=Counter)
    lost: Counter = dataclasses.field(default_factory=Counter)  # died with a killed worker
    failed: Counter = dataclasses.field(default_factory=Counter)
    failures: list = dataclasses.field(default_factory=list)  # (class, time, what)
    # (class, variant) -> Counter of outcomes, for garbage and resets.
    outcomes: dict = dataclasses.field(default_factory=dict)
    keepalive_conns: int = 0
    slow_past_deadline: int = 0
    # X-Forwarded-For value -> [(worker, start, end)], from requests routed by it.
    routes: dict = dataclasses.field(default_factory=dict)

    def ok(self, kind):
        self.answered[kind] += 1

    def fail(self, kind, what, excusable=True):
        """Counts a good request's failure, as lost with a killed worker if it may be."""
        at = time.monotonic()
        if excusable and self.workers.killed_recently(at):
            self.lost[kind] += 1
            return
        self.failed[kind] += 1
        if len(self.failures) < 20:
            self.failures.append((kind, at, what))

    def outcome(self, kind, variant, what):
        self.outcomes.setdefault((kind, variant), Counter())[what] += 1

    def route(self, xff, worker, start, end):
        self.routes.setdefault(xff, []).append((worker, start, end))


def stickiness(stats, workers):
    """(values judged, requests judged, violations): a value's home is where its undisturbed
    requests went; any other worker is wrong unless the home was down or stalled then."""
    spans = workers.disturbances()

    def disturbed(slot, start, end):
        return any(a <= end and start <= b for a, b in spans[slot])

    values = judged = 0
    violations = []
    for xff, seen in stats.routes.items():
        clean = Counter(w for w, s, e in seen
                        if not any(disturbed(slot, s, e) for slot in range(WORKERS)))
        if not clean:
            continue
        home = clean.most_common(1)[0][0]
        values += 1
        for w, s, e in seen:
            judged += 1
            if w != home and not disturbed(home, s, e):
                violations.append((xff, home, w, s))
    return values, judged, violations


# ---- the clients ---------------------------------------------------------------------------


class Load:
    """What every client needs: where to connect, when to stop, where to count."""

    def __init__(self, master, workers, stats, keys):
        self.addr = master.listen
        self.workers = workers
        self.stats = stats
        self.keys = keys
        self.stopping = asyncio.Event()

    async def connect(self):
        src = random.choice(SOURCES)
        return await asyncio.open_connection(*self.addr, local_addr=(src, 0))


def xff_values(n):
    """Varied X-Forwarded-For values: addresses, ports, lists, IPv6, plain tokens."""
    values = []
    for i in range(n):
        a, b = divmod(i, 250)
        values.append(random.choice([
            f"10.{a}.{b}.{i % 7 + 1}",
            f"10.{a}.{b}.9:{1024 + i}",
            f"[2001:db8::{i:x}]:443",
            f"198.51.{a}.{b}, 10.0.0.1",
            f"unknown, 203.0.{a}.{b}",
            f"client-{i}",
        ]))
    return values


def http_request(xff, path="/", close=False):
    connection = "close" if close else "keep-alive"
    return (
        f"GET {path} HTTP/1.1\r\nHost: soak\r\nUser-Agent: stickyd-soak\r\n"
        f"X-Forwarded-For: {xff}\r\nConnection: {connection}\r\n\r\n"
    ).encode()


async def read_response(reader):
    """(status, headers, body) of one response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise BadResponse(f"status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length", "0")
    if not length.isdigit():
        raise BadResponse(f"Content-Length {length!r}")
    body = await reader.readexactly(int(length))
    return int(parts[1]), headers, body


def worker_of(status, headers, body):
    """The answering worker of a good response; BadResponse if it is not one."""
    worker = headers.get("x-worker", "")
    if status != 200 or not worker.isdigit() or int(worker) >= WORKERS:
        raise BadResponse(f"status {status}, X-Worker {worker!r}")
    if body != f"worker: {worker}\n".encode():
        raise BadResponse(f"body {body[:40]!r} from worker {worker}")
    return int(worker)


def describe(e):
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def reset(writer):
    """Closes with an RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def pause(lo, hi):
    await asyncio.sleep(random.uniform(lo, hi))


async def new_connection_client(load):
    while not load.stopping.is_set():
        xff = random.choice(load.keys)
        load.stats.made["new"] += 1
        start = time.monotonic()
        writer = None
        try:
            async with asyncio.timeout(GOOD_TIMEOUT):
                reader, writer = await load.connect()
                writer.write(http_request(xff, close=True))
                worker = worker_of(*await read_response(reader))
            load.stats.ok("new")
            load.stats.route(xff, worker, start, time.monotonic())
        except BadResponse as e:
            load.stats.fail("new", describe(e), excusable=False)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError) as e:
            load.stats.fail("new", describe(e))
        finally:
            if writer:
                writer.close()
        await pause(0.005, 0.05)


async def keepalive_client(load):
    while not load.stopping.is_set():
        xff = random.choice(load.keys)
        load.stats.keepalive_conns += 1
        writer = None
        first = None
        try:
            for i in range(random.randint(3, 10)):
                if i > 0 and load.stopping.is_set():
                    break
                load.stats.made["keepalive"] += 1
                start = time.monotonic()
                async with asyncio.timeout(GOOD_TIMEOUT):
                    if writer is None:
                        reader, writer = await load.connect()
                    writer.write(http_request(xff))
                    worker = worker_of(*await read_response(reader))
                if first is None:
                    first = worker
                    load.stats.route(xff, worker, start, time.monotonic())
                elif worker != first:
                    raise BadResponse(f"X-Worker {worker} after {first} on one connection")
                load.stats.ok("keepalive")
                await pause(0, 0.2)
        except BadResponse as e:
            load.stats.fail("keepalive", describe(e), excusable=False)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError) as e:
            load.stats.fail("keepalive", describe(e))
        finally:
            if writer:
                writer.close()
        await pause(0.01, 0.1)


async def slow_client(load):
    """Sends all but the last few bytes of the head at once and trickles the rest, which
    holds the end of the X-Forwarded-For value: the key is complete only with the head."""
    while not load.stopping.is_set():
        request = (f"GET /slow HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n"
                   f"X-Forwarded-For: {random.choice(load.keys)}\r\n\r\n").encode()
        tail = random.randint(5, 24)
        load.stats.made["slow"] += 1
        writer = response = None
        try:
            async with asyncio.timeout(GOOD_TIMEOUT):
                reader, writer = await load.connect()
            connected = time.monotonic()
            response = asyncio.create_task(read_response(reader))
            writer.write(request[:-tail])
            for byte in request[-tail:]:
                await pause(0.1, 0.5)
                if response.done():
                    break  # answered or failed early: its result says which
                writer.write(bytes([byte]))
            if time.monotonic() - connected > PEEK_TIMEOUT:
                load.stats.slow_past_deadline += 1
            async with asyncio.timeout(GOOD_TIMEOUT):
                worker_of(*await response)
            load.stats.ok("slow")
        except BadResponse as e:
            load.stats.fail("slow", describe(e), excusable=False)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError) as e:
            load.stats.fail("slow", describe(e))
        finally:
            if response and not response.done():
                response.cancel()
            if writer:
                writer.close()


def garbage_payload():
    """(name, bytes) of one malformed or hostile request."""
    xff = f"X-Forwarded-For: 10.9.{random.randint(0, 255)}.{random.randint(0, 255)}\r\n"
    choices = [
        ("random", lambda: os.urandom(random.randint(1, 4096))),
        ("nul", lambda: b"\0" * random.randint(1, 2048)),
        ("nul-in-head", lambda: f"GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.\0.4\r\n{xff}\r\n"
                                .encode()),
        ("invalid-utf8", lambda: b"GET /\xff\xfe HTTP/1.1\r\nX-Forwarded-For: \xc3\x28\xa0\xa1"
                                 b"\r\nCookie: \xed\xa0\x80\r\n\r\n"),
        ("tls", lambda: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
                        + os.urandom(random.randint(0, 500))),
        ("http2", lambda: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00"),
        ("20k-line", lambda: b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000
                             + f"\r\n{xff}\r\n".encode()),
        ("no-crlf", lambda: b"GET / HTTP/1.1 " + b"A" * random.randint(100, 20000)),
        ("bare-lf", lambda: f"GET / HTTP/1.1\n{xff.strip()}\n\n".encode()),
        ("many-lines", lambda: b"GET / HTTP/1.1\r\n" + b"X-a: b\r\n" * 2000
                               + f"{xff}\r\n".encode()),
        ("bad-xff", lambda: b"GET / HTTP/1.1\r\nX-Forwarded-For: ,, unknown, 999.1.1.1:x, [::1\r\n"
                            b"\r\n"),
    ]
    name, make = random.choice(choices)
    return name, make()


async def garbage_client(load):
    """Sends garbage, then half-closes or just waits, reads what comes, closes."""
    while not load.stopping.is_set():
        name, payload = garbage_payload()
        load.stats.made["garbage"] += 1
        writer = None
        outcome = "no answer"
        data = b""
        try:
            async with asyncio.timeout(GOOD_TIMEOUT):
                reader, writer = await load.connect()
                writer.write(payload)
                await writer.drain()
                if random.random() < 0.5:
                    writer.write_eof()
                    data = await reader.read(256)
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(random.uniform(0.5, 3)):
                            data = await reader.read(256)
                if data.startswith(b"HTTP/1.1 "):
                    outcome = data[9:12].decode("latin-1")
                elif data:
                    outcome = "other bytes"
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
            outcome = type(e).__name__
        finally:
            if writer:
                writer.close()
        load.stats.outcome("garbage", name, outcome)
        await pause(0.05, 0.3)


async def reset_client(load):
    """Connects and closes or resets at a random point."""
    modes = ["connect-close", "connect-rst", "partial-rst", "request-rst", "mid-response-rst"]
    while not load.stopping.is_set():
        mode = random.choice(modes)
        load.stats.made["reset"] += 1
        writer = None
        outcome = "done"
        try:
            async with asyncio.timeout(GOOD_TIMEOUT):
                reader, writer = await load.connect()
                request = http_request(random.choice(load.keys))
                if mode == "connect-close":
                    await pause(0, 2.5)
                    writer.close()
                elif mode == "connect-rst":
                    await pause(0, 2.5)
                    reset(writer)
                elif mode == "partial-rst":
                    writer.write(request[: random.randint(1, len(request) - 1)])
                    await pause(0, 2.5)
                    reset(writer)
                elif mode == "request-rst":
                    writer.write(request)
                    await pause(0, 0.05)
                    reset(writer)
                else:
                    writer.write(http_request(random.choice(load.keys), path="/bytes/1048576"))
                    await reader.readexactly(random.randint(1, 200_000))
                    reset(writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
            outcome = type(e).__name__
            if writer:
                writer.close()
        load.stats.outcome("reset", mode, outcome)
        await pause(0.05, 0.3)


async def chaos(load):
    """Every 2-4 s, SIGKILLs a worker or SIGSTOPs it for 0.5-3 s."""
    stalls = set()
    try:
        while not load.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(random.uniform(2, 4)):
                    await load.stopping.wait()
            slots = load.workers.pickable()
            if load.stopping.is_set() or not slots:
                continue
            slot = random.choice(slots)
            if random.random() < 0.5:
                load.workers.kill(slot)
            else:
                task = asyncio.create_task(load.workers.stall(slot, random.uniform(0.5, 3)))
                stalls.add(task)
                task.add_done_callback(stalls.discard)
    finally:
        # Every stalled worker is continued before the checks begin.
        await asyncio.gather(*stalls, return_exceptions=True)


async def sample(master, peaks):
    """Tracks the master's peak fd count and RSS."""
    while master.alive():
        with contextlib.suppress(OSError):
            peaks["fd"] = max(peaks["fd"], proc_fds(master.pid))
            peaks["rss"] = max(peaks["rss"], proc_rss(master.pid))
        await asyncio.sleep(0.5)


# ---- the run -------------------------------------------------------------------------------


async def settle(master, baseline_fds):
    """Waits until every worker is live, none holds unacknowledged connections and the fd
    count is back near its baseline; returns the last metrics scrape."""
    deadline = time.monotonic() + SETTLE
    while True:
        samples = await master.scrape()
        live = samples.get("stickyd_worker_live", {}).values()
        unacked = samples.get("stickyd_unacked_connections", {}).values()
        quiet = sum(live) == WORKERS and sum(unacked) == 0
        if quiet and proc_fds(master.pid) <= baseline_fds + FD_MARGIN:
            return samples
        if time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.5)


def total(samples, name):
    return int(sum(samples.get(name, {}).values()))


@dataclasses.dataclass
class Figures:
    """The master's resources and the run's length, for the checks and the summary."""

    baseline: dict
    peak: dict
    final: dict | None = None
    cpu: float | None = None
    duration: float = 0.0
    started: float = 0.0
    samples: dict = dataclasses.field(default_factory=dict)
    workers_before_stop: int = 0
    workers_left: list = dataclasses.field(default_factory=list)


async def run_load(args, load, master, figures):
    """Runs every client and the chaos for args.seconds, or until the master dies."""
    kinds = [("keepalive", keepalive_client), ("new", new_connection_client),
             ("slow", slow_client), ("garbage", garbage_client), ("reset", reset_client)]
    clients = [asyncio.create_task(client(load))
               for kind, client in kinds for _ in range(CONCURRENCY[kind])]
    chaos_task = asyncio.create_task(chaos(load))
    figures.started = time.monotonic()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(args.seconds):
            await master.proc.wait()
    load.stopping.set()
    figures.duration = time.monotonic() - figures.started
    results = await asyncio.gather(chaos_task, *clients, return_exceptions=True)
    return [f"a client task crashed: {describe(r)}" for r in results if isinstance(r, Exception)]


async def check_end(master, figures, kills):
    """Settles, measures, stops the master; returns the problems found."""
    problems = []
    pid = master.pid
    figures.samples = await settle(master, figures.baseline["fd"])
    figures.final = {"fd": proc_fds(pid), "rss": proc_rss(pid)}
    figures.cpu = proc_cpu_seconds(pid)
    base, final = figures.baseline, figures.final
    if final["fd"] > base["fd"] + FD_MARGIN:
        problems.append(f"master fds {final['fd']} after up to {SETTLE:.0f}s to settle, "
                        f"baseline {base['fd']} (+{FD_MARGIN} allowed)")
    if final["rss"] > base["rss"] + RSS_MARGIN:
        problems.append(f"master RSS {final['rss'] >> 10} KiB, baseline {base['rss'] >> 10} "
                        f"KiB (+{RSS_MARGIN >> 20} MiB allowed)")
    if total(figures.samples, "stickyd_worker_live") != WORKERS:
        problems.append("not every worker was live again after the load")
    if total(figures.samples, "stickyd_unacked_connections") != 0:
        problems.append("connections still unacknowledged after the load")
    restarts = total(figures.samples, "stickyd_worker_restarts_total")
    if restarts != kills:
        problems.append(f"{restarts} worker restarts for {kills} kills")

    children = children_of(pid)
    figures.workers_before_stop = len(children)
    code = await master.stop()
    if code is None:
        problems.append(f"the master outlived SIGTERM by more than its grace ({GRACE:.0f}s + 2s)")
    elif code != 0:
        problems.append(f"after SIGTERM the master exited with {code}")
    await asyncio.sleep(0.5)  # the reaper of orphans gets a moment
    left = [p for p, start in children if still_running(p, start)]
    figures.workers_left = left
    if left:
        problems.append(f"worker processes left after the master exited: {left}")
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
    return problems


def check_requests(stats, workers, master, sticky):
    problems = []
    for kind in GOOD_CLASSES:
        if stats.failed[kind]:
            problems.append(f"{stats.failed[kind]} good {kind} requests failed")
    violations = sticky[2]
    if violations:
        problems.append(f"{len(violations)} requests reached another worker than their "
                        "X-Forwarded-For's home while the home was neither down nor stalled")
    if master.error_lines:
        problems.append(f"{len(master.error_lines)} error or panic lines in the master's log")
    if workers.exits_seen != workers.kills:
        problems.append(f"{workers.exits_seen} worker exits logged for {workers.kills} kills")
    return problems


async def soak(args):
    workdir = tempfile.mkdtemp(prefix="stickyd-soak-")
    log_path = os.path.join(workdir, "stickyd.log")
    workers = Workers()
    master = Master(args.stickyd, log_path, workers, args.backend, args.threads)
    try:
        try:
            await master.start()
        except (OSError, TimeoutError) as e:
            print(f"soak: stickyd did not start ({describe(e)}); log {log_path}", flush=True)
            return 1
        pid = master.pid
        baseline = {"fd": proc_fds(pid), "rss": proc_rss(pid)}
        figures = Figures(baseline=baseline, peak=dict(baseline))
        stats = Stats(workers)
        load = Load(master, workers, stats, xff_values(200))
        print(f"soak: stickyd pid {pid} on {master.listen[0]}:{master.listen[1]}, load for "
              f"{args.seconds}s, log {log_path}", file=sys.stderr, flush=True)
        sampler = asyncio.create_task(sample(master, figures.peak))
        problems = await run_load(args, load, master, figures)
        if master.alive():
            problems += await check_end(master, figures, workers.kills)
        else:
            problems.append(f"the master exited during the load (code {master.proc.returncode})")
            await master.close_log()
            await asyncio.sleep(1)  # its workers see it gone
            figures.workers_before_stop = len(workers.pids)
            figures.workers_left = [p for p in workers.pids.values() if alive(p)]
            if figures.workers_left:
                problems.append(f"workers outlived the master: {figures.workers_left}")
        sampler.cancel()
        sticky = stickiness(stats, workers)
        problems += check_requests(stats, workers, master, sticky)
        report(args, stats, workers, figures, master, problems, sticky)
        return 1 if problems else 0
    finally:
        if master.proc and master.alive():
            master.proc.kill()
            await master.proc.wait()


def report(args, stats, workers, figures, master, problems, sticky):
    mib = 1024 * 1024
    good = sum(stats.made[k] for k in GOOD_CLASSES)
    answered = sum(stats.answered[k] for k in GOOD_CLASSES)
    lost = sum(stats.lost[k] for k in GOOD_CLASSES)
    failed = sum(stats.failed[k] for k in GOOD_CLASSES)
    duration = max(figures.duration, 1e-9)
    values, judged, violations = sticky
    samples = figures.samples
    base, peak, final = figures.baseline, figures.peak, figures.final or {}
    out = [
        "== stickyd soak summary ==",
        f"duration          {figures.duration:.1f}s of load ({args.seconds}s asked), "
        f"{WORKERS} workers, peek timeout {PEEK_TIMEOUT:.0f}s, max queue {MAX_QUEUE}",
        "requests made     " + ", ".join(
            f"{k} {stats.made[k]}" for k in ("keepalive", "new", "slow", "garbage", "reset"))
        + f" (on {stats.keepalive_conns} keep-alive connections; "
          f"{stats.slow_past_deadline} slow heads finished past the peek deadline)",
        f"good requests     {good}: answered {answered}, lost with a killed worker {lost}, "
        f"failed {failed}",
    ]
    out += [f"  {k:<15} answered {stats.answered[k]}, lost {stats.lost[k]}, failed "
            f"{stats.failed[k]}" for k in GOOD_CLASSES]
    out += [
        f"requests/second   {sum(stats.made.values()) / duration:.0f} in all, "
        f"{answered / duration:.0f} good answered",
        f"stickiness        {values} X-Forwarded-For values, {judged} routed requests judged, "
        f"{len(violations)} violations",
        f"chaos             {workers.kills} kills, {workers.stalls} stalls (0.5-3s), "
        f"{workers.exits_seen} worker exits logged",
        "metrics           -" if not samples else
        f"metrics           restarts {total(samples, 'stickyd_worker_restarts_total')}, "
        f"spills {total(samples, 'stickyd_spills_total')}, re-dispatched "
        f"{total(samples, 'stickyd_redispatched_total')}, returned "
        f"{total(samples, 'stickyd_returned_total')}, accepted "
        f"{total(samples, 'stickyd_connections_accepted_total')}, dispatched "
        f"{total(samples, 'stickyd_connections_dispatched_total')}, peek timeouts "
        f"{total(samples, 'stickyd_peek_timeouts_total')}, fallbacks "
        f"{total(samples, 'stickyd_fallbacks_total')}",
        "master CPU        " + (f"{figures.cpu:.2f}s" if figures.cpu is not None else "-"),
        f"master RSS        baseline {base['rss'] / mib:.1f} MiB, peak {peak['rss'] / mib:.1f} "
        "MiB, final " + (f"{final['rss'] / mib:.1f} MiB" if final else "-"),
        f"master fds        baseline {base['fd']}, peak {peak['fd']}, final "
        + str(final.get("fd", "-")),
        f"worker processes  {figures.workers_before_stop} before the end, "
        f"{len(figures.workers_left)} left after the master exited",
    ]
    for kind in ("garbage", "reset"):
        variants = sorted((v, c) for (k, v), c in stats.outcomes.items() if k == kind)
        out.append(f"{kind + ' outcomes':<18}" + "; ".join(
            f"{v}: " + ", ".join(f"{what} {n}" for what, n in c.most_common())
            for v, c in variants))
    out += [f"  failure: {kind} at {at - figures.started:.1f}s: {what}"
            for kind, at, what in stats.failures[:10]]
    out += [f"  sticky: {xff!r} home {home}, answered by {w} at {at - figures.started:.1f}s"
            for xff, home, w, at in violations[:10]]
    out += [f"  log: {line}" for line in master.error_lines[:10]]
    if figures.final is None:  # the master died during the load: its last words
        with open(master.log_path, "rb") as f:
            tail = f.read().decode("utf-8", "replace").splitlines()[-20:]
        out += [f"  log: {line}" for line in tail]
    out.append(f"log               {master.log_path}")
    if problems:
        out.append("FAIL")
        out += [f"  - {p}" for p in problems]
    else:
        out.append("PASS: every check passed")
    print("\n".join(out), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=300, help="how long the load runs")
    parser.add_argument("--stickyd", default="target/release/stickyd", help="the binary")
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "uring", "epoll"], help="stickyd's event loop"
    )
    parser.add_argument("--threads", type=int, default=1, help="stickyd's dispatcher threads")
    args = parser.parse_args()
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    try:
        return asyncio.run(soak(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
