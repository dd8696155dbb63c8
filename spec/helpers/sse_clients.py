#!/usr/bin/env python3
"""Many concurrent SSE clients for the specs (asyncio, stdlib only).

Opens --clients connections to 127.0.0.1:--port with Host --host, reads --events message events on each
(or until --timeout), and prints one JSON line: how many clients completed, how many distinct event
sequences they saw (1 means identical: per partition the same records in the same order, as Kafka orders
only within a partition), the ids of the first and last events, and any errors.
With --slow N, client 0 stops reading for N seconds after its first event (a slow client).
"""
import argparse
import asyncio
import hashlib
import json
import re
import socket
import time


async def client(index, args, results, started):
    per_partition = {}
    events = []
    errors = []
    try:
        sock = socket.socket()
        if index == 0 and args.slow:
            # a small receive buffer, so that not reading soon holds up the server's writes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", args.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        writer.write(f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\nAccept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            errors.append(f"status {status}")
        started.append(index)
        buf = b""
        got = 0
        slowed = False
        while got < args.events and status == 200:
            line = await reader.readline()  # chunk size
            if not line:
                break
            size = int(line.strip() or b"0", 16)
            if size == 0:
                break
            data = await reader.readexactly(size + 2)
            buf += data[:-2]
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                fields = {}
                for raw in block.split(b"\n"):
                    name, _, value = raw.partition(b":")
                    fields[name.decode()] = value[1:] if value.startswith(b" ") else value
                if "" in fields or ("data" not in fields and "event" not in fields):
                    continue  # a comment (heartbeat) or the retry hint
                kind = fields.get("event", b"message").decode()
                if kind == "message":
                    got += 1
                    data = fields.get("data", b"")
                    partition = re.search(rb'"partition":(\d+)', data)
                    key = partition.group(1) if partition else b""
                    per_partition.setdefault(key, hashlib.sha1()).update(data + b"\n")
                    events.append(fields.get("id", b"").decode())
                elif kind == "error":
                    errors.append("error event: " + fields.get("data", b"").decode())
                    got = args.events  # stream is over
            if index == 0 and args.slow and not slowed and got > 0:
                slowed = True
                await asyncio.sleep(args.slow)
        writer.close()
    except Exception as exc:  # noqa: BLE001 - reported to the spec
        errors.append(repr(exc))
    digest = hashlib.sha1(b"".join(k + b":" + h.digest() for k, h in sorted(per_partition.items())))
    results[index] = {"events": len(events), "digest": digest.hexdigest(), "first": events[:1], "last": events[-1:],
                      "errors": errors}


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--slow", type=float, default=0)
    parser.add_argument("--ready-file", default="")
    args = parser.parse_args()
    results, started = {}, []
    tasks = [asyncio.create_task(client(i, args, results, started)) for i in range(args.clients)]
    t0 = time.time()
    if args.ready_file:
        while len(started) < args.clients and time.time() - t0 < args.timeout:
            await asyncio.sleep(0.05)
        with open(args.ready_file, "w") as f:
            f.write(str(len(started)))
    done, pending = await asyncio.wait(tasks, timeout=max(0.1, args.timeout - (time.time() - t0)))
    for task in pending:
        task.cancel()
    counts = [results.get(i, {}).get("events", 0) for i in range(args.clients)]
    normal = [results[i] for i in range(args.clients) if i in results and not (args.slow and i == 0)]
    print(json.dumps({
        "clients": args.clients,
        "complete": sum(1 for c in counts if c >= args.events),
        "sequences": len({r["digest"] for r in normal if r["events"] >= args.events}),
        "counts_min": min(counts) if counts else 0,
        "first_ids": sorted({r["first"][0] for r in results.values() if r["first"]})[:3],
        "last_ids": sorted({r["last"][0] for r in results.values() if r["last"]})[:3],
        "slow": results.get(0) if args.slow else None,
        "errors": [e for r in normal for e in r["errors"]][:5],
        "seconds": round(time.time() - t0, 3),
    }))


asyncio.run(main())
