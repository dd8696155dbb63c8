#!/usr/bin/python3
"""WebSocket clients for the specs, on the `websockets` library (Debian's python3-websockets).

Each of --clients connections to 127.0.0.1:--port (Host --host, path --path) runs the same --script, a JSON
array of steps, and the program prints one JSON line. With one client: what it saw
  {"status": <handshake status, 101 when upgraded>,
   "records": [...every record received, in order...], "frames": <text frames received>,
   "sizes": [...the number of records of each records frame, in order...],
   "errors": [...error frames...], "close": {"code": N, "reason": "..."} | null}
With --ready-file F, F gets the number of clients once every one is connected (upgraded).
With several: {"clients": N, "completed": <clients whose script ran to its end>, "distinct": <distinct
record sequences, as "partition:offset" lists; 1 means identical>, "records": <records of client 0>,
"failures": [...first few failures...]}.

Steps (each optional key applies to the one step):
  {"read": N, "timeout": S}        read frames until N records in all have arrived (fails after S s);
                                   with "ack_each": true, ack each frame's cursor as it arrives
  {"read_errors": N, "timeout": S} read frames until N error frames in all have arrived (fails after S s)
  {"quiet": S}                     read for S s; the records that arrive are kept, and how many in "quiet"
  {"ack": "last"}                  ack the cursor of the last frame received (cumulative)
  {"ack": "cursor", "index": I}    ack the cursor of record I (1-based, in arrival order)
  {"ack": "records", "order": "reverse" | "forward", "from": I, "to": J}   ack records I..J one by one
  {"send": TEXT} | {"send_binary": HEX} | {"send_fragmented": [TEXT, TEXT]}
  {"ping": TEXT}                   ping, and wait up to 5 s for the pong ("pongs" counts those that came)
  {"stall": S}                     stop reading the socket for S s (the library answers no ping meanwhile)
  {"send_raw_unmasked": TEXT}      a text frame without the mask every client frame must have
  {"wait_close": S}                read until the server closes (its code and reason go to "close")
  {"signal": PATH}                 create the file PATH (tells the spec this client got that far)
  {"wait_file": PATH, "timeout": S}  wait until the file PATH exists (the spec's go-ahead; fails after S s)
  {"close": true}                  close normally (code 1000)
  {"drop": true}                   close the TCP connection without a close frame
"""
import argparse
import asyncio
import hashlib
import json
import os
import sys

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatusCode


class State:
    def __init__(self):
        self.records = []
        self.frames = 0
        self.sizes = []
        self.errors = []
        self.close = None
        self.last_cursor = None
        self.quiet = []
        self.pongs = 0


def take(state, text):
    frame = json.loads(text)
    state.frames += 1
    if frame.get("type") == "records":
        state.records.extend(frame["records"])
        state.sizes.append(len(frame["records"]))
        state.last_cursor = frame["cursor"]
    elif frame.get("type") == "error":
        state.errors.append(frame)


async def read_until(ws, state, done, timeout, ack_each=False):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done():
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError(f"{len(state.records)} records after {timeout} s")
        try:
            message = await asyncio.wait_for(ws.recv(), left)
        except asyncio.TimeoutError:
            continue
        take(state, message)
        if ack_each and json.loads(message).get("type") == "records":
            await ws.send(json.dumps({"type": "ack", "cursor": state.last_cursor}))


def closed(ws, state):
    state.close = {"code": ws.close_code, "reason": ws.close_reason}


async def step(ws, state, s):
    if "read" in s:
        await read_until(ws, state, lambda: len(state.records) >= s["read"], s.get("timeout", 15),
                         s.get("ack_each", False))
    elif "read_errors" in s:
        await read_until(ws, state, lambda: len(state.errors) >= s["read_errors"], s.get("timeout", 15))
    elif "quiet" in s:
        before = len(state.records)
        try:
            await read_until(ws, state, lambda: False, s["quiet"])
        except TimeoutError:
            pass
        state.quiet.append(len(state.records) - before)
    elif s.get("ack") == "last":
        await ws.send(json.dumps({"type": "ack", "cursor": state.last_cursor}))
    elif s.get("ack") == "cursor":
        await ws.send(json.dumps({"type": "ack", "cursor": state.records[s["index"] - 1]["cursor"]}))
    elif s.get("ack") == "records":
        chosen = state.records[s.get("from", 1) - 1:s.get("to", len(state.records))]
        if s.get("order") == "reverse":
            chosen = list(reversed(chosen))
        for r in chosen:
            await ws.send(json.dumps({"type": "ack", "topic": r["topic"], "partition": r["partition"],
                                      "offset": r["offset"]}))
    elif "send" in s:
        await ws.send(s["send"])
    elif "send_binary" in s:
        await ws.send(bytes.fromhex(s["send_binary"]))
    elif "send_fragmented" in s:
        await ws.send(iter(s["send_fragmented"]))
    elif "ping" in s:
        pong = await ws.ping(s["ping"])
        await asyncio.wait_for(pong, 5)
        state.pongs += 1
    elif "stall" in s:
        ws.transport.pause_reading()
        await asyncio.sleep(s["stall"])
        ws.transport.resume_reading()
    elif "send_raw_unmasked" in s:
        payload = s["send_raw_unmasked"].encode()
        ws.transport.write(bytes([0x81, len(payload)]) + payload)
    elif "wait_close" in s:
        try:
            await read_until(ws, state, lambda: False, s["wait_close"])
        except ConnectionClosed:
            pass
        closed(ws, state)
    elif "signal" in s:
        with open(s["signal"], "w") as f:
            f.write("1")
    elif "wait_file" in s:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.get("timeout", 15)
        while not os.path.exists(s["wait_file"]):
            if loop.time() > deadline:
                raise TimeoutError(f"no {s['wait_file']} after {s.get('timeout', 15)} s")
            await asyncio.sleep(0.05)  # the poll interval of this wait-with-deadline
    elif s.get("close"):
        await ws.close()
        closed(ws, state)
    elif s.get("drop"):
        ws.transport.abort()
    else:
        raise ValueError(f"unknown step {s}")


connected = 0


def upgraded(args):
    global connected
    connected += 1
    if args.ready_file and connected == args.clients:
        with open(args.ready_file, "w") as f:
            f.write(str(connected))


async def client(args, script):
    state = State()
    result = {"status": None}
    try:
        async with websockets.connect(f"ws://{args.host}{args.path}", host="127.0.0.1", port=args.port,
                                      max_size=None, ping_interval=None, open_timeout=args.timeout,
                                      close_timeout=2) as ws:
            result["status"] = 101
            upgraded(args)
            try:
                for s in script:
                    await step(ws, state, s)
            except ConnectionClosed:
                closed(ws, state)
                raise
    except InvalidStatusCode as e:
        result["status"] = e.status_code
    except (ConnectionClosed, TimeoutError, OSError) as e:
        result["failure"] = f"{type(e).__name__}: {e}"
    result.update(records=state.records, frames=state.frames, sizes=state.sizes, errors=state.errors,
                  close=state.close, quiet=state.quiet, pongs=state.pongs)
    return result


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--script", default="[]")
    parser.add_argument("--ready-file", default="")
    args = parser.parse_args()
    script = json.loads(args.script)
    if args.clients == 1:
        print(json.dumps(await client(args, script)))
        return
    results = await asyncio.gather(*(client(args, script) for _ in range(args.clients)))
    sequences = set()
    for r in results:
        seq = ",".join(f"{x['partition']}:{x['offset']}" for x in r["records"])
        sequences.add(hashlib.sha1(seq.encode()).hexdigest())
    failures = [r["failure"] for r in results if "failure" in r][:5]
    print(json.dumps({"clients": args.clients, "completed": sum(1 for r in results if "failure" not in r
                                                                and r["status"] == 101),
                      "distinct": len(sequences), "records": results[0]["records"], "failures": failures}))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
