#!/usr/bin/env python3
"""Commit-to-SSE delivery, measured with as little client work as possible: N live-feed
subscribers on non-blocking sockets under one epoll, commands sent one at a time on another
socket. For each command, the time from reading its reply (sent after the commit) to reading
its event on each subscriber's socket (the event found by its id in the raw bytes; no JSON
parsing, no asyncio). sse_latency.py measures the same through asyncio streams and json.loads,
whose per-message cost (about 100 messages per command, read one after the other) adds to the
figures; run.py runs both.
Usage: sse_epoll.py HOST PORT [SUBSCRIBERS] [COMMANDS]   (against `cqrs --http HOST:PORT`)"""
import json
import select
import socket
import sys
import time

host, port = sys.argv[1], int(sys.argv[2])
subs = int(sys.argv[3]) if len(sys.argv) > 3 else 100
commands = int(sys.argv[4]) if len(sys.argv) > 4 else 200

ep = select.epoll()
conns = {}
for _ in range(subs):
    s = socket.create_connection((host, port))
    s.sendall(f"GET /api/v1/events/live HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    s.setblocking(False)
    ep.register(s.fileno(), select.EPOLLIN)
    conns[s.fileno()] = [s, buf.split(b"\r\n\r\n", 1)[1]]

cmd = socket.create_connection((host, port))
cmd.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
cmd.setblocking(False)
ep.register(cmd.fileno(), select.EPOLLIN)
stamp = time.time_ns()
latencies = []
for i in range(commands):
    agg = f"lat-{stamp}-{i}"
    key = f'"aggregateId":"{agg}"'.encode()
    body = json.dumps({"type": "CreateUser", "payload": {"id": agg, "name": "N"}})
    cmd.setblocking(True)
    cmd.sendall(f"POST /api/v1/commands HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                f"application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
    cmd.setblocking(False)
    reply = b""
    arrived = {}  # fd -> time its event was read
    replied = None
    deadline = time.perf_counter() + 10
    while (replied is None or len(arrived) < subs) and time.perf_counter() < deadline:
        for fd, _ in ep.poll(0.01):
            if fd == cmd.fileno():
                try:
                    reply += cmd.recv(65536)
                except BlockingIOError:
                    continue
                head, sep, rest = reply.partition(b"\r\n\r\n")
                if sep and replied is None:
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    if len(rest) >= length:
                        replied = time.perf_counter()
                        if not head.startswith(b"HTTP/1.1 201"):
                            sys.exit(f"command {i}: {head!r}")
                continue
            c = conns[fd]
            try:
                data = c[0].recv(65536)
            except BlockingIOError:
                continue
            now = time.perf_counter()
            c[1] += data
            if fd not in arrived and key in c[1]:
                arrived[fd] = now
                c[1] = c[1][c[1].index(key):]
    if replied is None or len(arrived) < subs:
        sys.exit(f"command {i}: reply {replied is not None}, {len(arrived)} of {subs} deliveries")
    latencies.extend(max(0.0, t - replied) for t in arrived.values())
    time.sleep(0.005)
l = sorted(latencies)
q = lambda p: l[min(len(l) - 1, int(p * len(l)))] * 1000
print(f"{subs} subscribers, {commands} commands, {len(l)} deliveries: "
      f"p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {l[-1]*1000:.2f} ms")
