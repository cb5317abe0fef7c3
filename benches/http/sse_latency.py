#!/usr/bin/env python3
"""Commit-to-SSE delivery: N live-feed subscribers, commands sent one at a time; for each
command, the time from its reply (sent after the commit) to its event reaching each subscriber.
Usage: sse_latency.py HOST PORT [SUBSCRIBERS] [COMMANDS]   (against `cqrs --http HOST:PORT`)"""
import asyncio, json, sys, time

host, port = sys.argv[1], int(sys.argv[2])
subs = int(sys.argv[3]) if len(sys.argv) > 3 else 100
commands = int(sys.argv[4]) if len(sys.argv) > 4 else 200
replied = {}   # aggregate id -> time of the reply
latencies = []

async def subscriber(ready):
    r, w = await asyncio.open_connection(host, port)
    w.write(f"GET /api/v1/events/live HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await w.drain()
    while (await r.readline()) not in (b"\r\n", b""):
        pass
    ready.set_result(True)
    while True:
        line = await r.readline()
        if not line:
            return
        if line.startswith(b"data: "):
            now = time.perf_counter()
            agg = json.loads(line[6:])["aggregateId"]
            while agg not in replied:   # the event may beat the reply to this client
                await asyncio.sleep(0)
                now2 = time.perf_counter()
                if now2 - now > 1: break
            latencies.append(max(0.0, now - replied.get(agg, now)))

async def main():
    readies = [asyncio.get_running_loop().create_future() for _ in range(subs)]
    tasks = [asyncio.create_task(subscriber(f)) for f in readies]
    await asyncio.gather(*readies)
    r, w = await asyncio.open_connection(host, port)
    stamp = time.time_ns()
    for i in range(commands):
        agg = f"lat-{stamp}-{i}"
        body = json.dumps({"type": "CreateUser", "payload": {"id": agg, "name": "N"}})
        w.write(f"POST /api/v1/commands HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
        await w.drain()
        length = 0
        while (line := await r.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await r.readexactly(length)
        replied[agg] = time.perf_counter()
        await asyncio.sleep(0.005)
    await asyncio.sleep(1)
    for t in tasks: t.cancel()
    l = sorted(latencies)
    q = lambda p: l[min(len(l) - 1, int(p * len(l)))] * 1000
    print(f"{subs} subscribers, {commands} commands, {len(l)} deliveries: "
          f"p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {l[-1]*1000:.2f} ms")

asyncio.run(main())
