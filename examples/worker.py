#!/usr/bin/env python3
"""A background job that broadcasts its progress to a channel.

Three ways to reach the clients:

  In-process (default): the worker hosts the WebSocket server itself.
      python examples/worker.py --port 3030 --wait
  then, in a browser console:
      ws = new WebSocket('ws://localhost:3030/ws');
      ws.onmessage = (m) => console.log(JSON.parse(m.data));
      ws.onopen = () => ws.send(JSON.stringify({type: 'subscribe', channel: 'jobs.demo'}));

  Through a running vxevents-server (its HTTP publish API):
      ./build/vxevents-server --api-key dev-key-change-me &
      python examples/worker.py --server http://127.0.0.1:3030 --api-key dev-key-change-me

  Through Redis, to every server of a fleet sharing it (vxevents.get_events(redis=...)):
      ./build/vxevents-server --redis redis://127.0.0.1:6379 &
      python examples/worker.py --redis redis://127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request


def run_job(publish, job_id: str, steps: int, delay: float) -> None:
    channel = f"jobs.{job_id}"
    publish(channel, "job.started", {"jobId": job_id, "steps": steps})
    for step in range(1, steps + 1):
        time.sleep(delay)  # the actual work would go here
        publish(channel, "job.progress",
                {"jobId": job_id, "step": step, "percent": round(100 * step / steps)})
        print(f"{channel}: {step}/{steps}", flush=True)
    publish(channel, "job.finished", {"jobId": job_id, "ok": True})


def http_publisher(base_url: str, api_key: str):
    url = base_url.rstrip("/") + "/api/broadcast"

    def publish(channel: str, event: str, data) -> None:
        body = json.dumps({"channel": channel, "event": event, "data": data}).encode()
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {api_key}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    return publish


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--job", default="demo", help="job id; the channel is jobs.<id>")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--delay", type=float, default=0.3, help="seconds per step")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=3030, help="in-process server port (0 = any)")
    ap.add_argument("--wait", type=float, nargs="?", const=60.0, default=0.0,
                    help="wait up to N seconds (default 60) for a subscriber before starting")
    ap.add_argument("--server", help="publish to a running vxevents-server at this URL instead")
    ap.add_argument("--api-key", help="the server's --api-key (with --server)")
    ap.add_argument("--redis", help="publish through this Redis (redis://host:port) instead")
    args = ap.parse_args(argv)

    if args.server:
        if not args.api_key:
            ap.error("--server needs --api-key")
        run_job(http_publisher(args.server, args.api_key), args.job, args.steps, args.delay)
        return 0

    import vxevents

    if args.redis:
        events = vxevents.get_events(redis=args.redis)
        try:
            time.sleep(0.2)  # let the Redis link come up (broadcasts before it are queued anyway)
            run_job(events.broadcast, args.job, args.steps, args.delay)
            time.sleep(0.2)  # and let the last ones leave before closing
        finally:
            vxevents.close_events()
        return 0

    with vxevents.events_plugin() as events:
        port = events.listen(args.host, args.port)
        channel = f"jobs.{args.job}"
        print(f"serving ws://{args.host}:{port}/ws — subscribe to {channel}", flush=True)
        deadline = time.monotonic() + args.wait
        while args.wait and not events.has_subscribers(channel):
            if time.monotonic() > deadline:
                print("no subscriber arrived; running anyway", flush=True)
                break
            time.sleep(0.1)
        run_job(events.broadcast, args.job, args.steps, args.delay)
        time.sleep(0.2)  # let the last frames flush before closing (clients get 1001)
    return 0


if __name__ == "__main__":
    sys.exit(main())
