#!/usr/bin/env python3
"""A stickyd worker in Python, written from the wire protocol page (docs/src/wire-protocol.md,
version 1) with the standard library only: it answers HTTP/1.1 like hello_worker (X-Worker, X-Listener, X-Peer,
body "worker: <id>"), one thread per connection.

    stickyd --workers 2 -- python3 examples/python/worker.py
"""

import os
import socket
import struct
import sys
import threading

VERSION = 1
HELLO, WELCOME, REFUSED, CONNS, ACK, DRAIN = 1, 2, 3, 4, 5, 6
HEADER = struct.Struct("<BBH")  # version, type, count
RECORD = struct.Struct("<QQQ16sHHHBB")  # seq, key_hash, accepted_ns, addr, port, listener, proxy_len, family, reserved
MAX_CONNS = 64
MAX_MESSAGE = 65536 + 16


def log(message):
    print(f"python worker: {message}", file=sys.stderr, flush=True)


def recv_message(channel):
    """One message and the fds that came with it; (b"", []) when the master has gone."""
    fds = []
    while True:
        try:
            data, ancdata, flags, _ = channel.recvmsg(
                MAX_MESSAGE, socket.CMSG_SPACE((MAX_CONNS + 1) * 4), socket.MSG_CMSG_CLOEXEC
            )
            break
        except (ConnectionResetError, BrokenPipeError):
            continue  # messages sent before the close are still queued: read on
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(struct.unpack(f"<{usable // 4}i", payload[:usable]))
    if flags & socket.MSG_TRUNC:
        raise ValueError("message truncated")
    return data, fds


def handshake(channel, worker_id):
    try:
        channel.send(HEADER.pack(VERSION, HELLO, 0) + struct.pack("<II", worker_id, os.getpid()))
    except (BrokenPipeError, ConnectionResetError):
        pass  # a REFUSED may still be queued
    data, fds = recv_message(channel)
    for fd in fds:
        os.close(fd)
    if not data:
        raise SystemExit("python worker: the master closed the channel before WELCOME")
    version, kind, count = HEADER.unpack_from(data)
    if version != VERSION:
        raise SystemExit(f"python worker: unsupported protocol version {version}")
    if kind == REFUSED:
        raise SystemExit(f"python worker: refused: {data[HEADER.size:].decode(errors='replace')}")
    if kind != WELCOME:
        raise SystemExit(f"python worker: expected WELCOME, got message type {kind}")
    names, at = [], HEADER.size + 8
    for _ in range(count):
        length = data[at]
        names.append(data[at + 1 : at + 1 + length].decode())
        at += 1 + length
    return names


def serve(sock, worker_id, listener, peer):
    """Answers every request on a connection until it closes or asks to."""
    with sock:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            close = any(
                line.lower().startswith(b"connection:") and b"close" in line.lower()
                for line in lines[1:]
            )
            body = f"worker: {worker_id}\n".encode()
            response = (
                f"HTTP/1.1 200 OK\r\nX-Worker: {worker_id}\r\nX-Listener: {listener}\r\n"
                f"X-Peer: {peer}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                + ("Connection: close\r\n" if close else "")
                + "\r\n"
            ).encode() + body
            sock.sendall(response)
            if close:
                return


def main():
    worker_id = int(os.environ["STICKYD_WORKER_ID"])
    channel = socket.socket(fileno=int(os.environ["STICKYD_FD"]))
    os.set_inheritable(channel.fileno(), False)
    listeners = handshake(channel, worker_id)
    log(f"worker {worker_id} ready, listeners {listeners}")
    threads = []
    while True:
        data, fds = recv_message(channel)
        if not data:
            break  # DRAIN was read (or the master went): finish what we have
        version, kind, count = HEADER.unpack_from(data)
        if kind == DRAIN:
            log(f"worker {worker_id} draining")
            continue
        if version != VERSION or kind != CONNS:
            raise SystemExit(f"python worker: unexpected message type {kind}")
        records = [RECORD.unpack_from(data, HEADER.size + i * RECORD.size) for i in range(count)]
        arrived = records[: len(fds)]
        # Acknowledge at once, before reading a byte: what is not named goes back to the master.
        seqs = [record[0] for record in arrived]
        channel.send(HEADER.pack(VERSION, ACK, len(seqs)) + struct.pack(f"<{len(seqs)}Q", *seqs))
        for fd in fds[len(records):]:
            os.close(fd)
        for (seq, key_hash, accepted_ns, addr, port, listener, proxy_len, family, _), fd in zip(
            arrived, fds
        ):
            sock = socket.socket(fileno=fd)
            sock.setblocking(True)
            if proxy_len:
                skipped = b""
                while len(skipped) < proxy_len:
                    skipped += sock.recv(proxy_len - len(skipped))
            ip = socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6,
                                  addr[:4] if family == 4 else addr)
            name = listeners[listener] if listener < len(listeners) else "?"
            thread = threading.Thread(target=serve, args=(sock, worker_id, name, ip), daemon=True)
            thread.start()
            threads.append(thread)
    for thread in threads:
        thread.join(timeout=10)
    log(f"worker {worker_id} exiting")


if __name__ == "__main__":
    main()
