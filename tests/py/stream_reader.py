"""A stream reader for the integration tests: a plain `websockets` client,
the kind users write, that can be made slower than the hub on purpose.

It reads /agent-events (URL given), checks that event ids come strictly in
order and each once, and stops once it has seen --until (or after
--timeout seconds). With --pause-every N --pause-ms M it sleeps M ms after
every N messages (a reader that throttles itself, so it falls far behind).
With --reconnect it resumes with ?since=<last id>&epoch=<epoch> when the
connection ends, as a careful reader does.

Prints "ready" once connected, then at the end one JSON line:
{"count", "first", "last", "out_of_order", "duplicates", "gaps", "resets",
 "closes", "epoch"}.
"""

import argparse
import asyncio
import json
import sys
import time
import urllib.parse

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def with_query(url, **params):
    parts = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(parts.query))
    q.update({k: str(v) for k, v in params.items() if v is not None})
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q)))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--until", type=int, required=True)
    ap.add_argument("--pause-every", type=int, default=0)
    ap.add_argument("--pause-ms", type=float, default=0)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--reconnect", action="store_true")
    a = ap.parse_args()

    s = {"count": 0, "first": None, "last": 0, "out_of_order": 0, "duplicates": 0,
         "gaps": [], "resets": [], "closes": [], "epoch": None}
    seen_any = False
    deadline = time.monotonic() + a.timeout
    url = a.url
    told_ready = False
    n = 0
    while time.monotonic() < deadline and s["last"] < a.until:
        try:
            async with connect(url, max_size=None, open_timeout=10) as ws:
                while s["last"] < a.until:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    msg = await asyncio.wait_for(ws.recv(), left)
                    if msg.startswith('{"id":'):
                        eid = int(msg[6:msg.index(",")])
                        n += 1
                        if seen_any and eid <= s["last"]:
                            if eid == s["last"]:
                                s["duplicates"] += 1
                            else:
                                s["out_of_order"] += 1
                            continue
                        seen_any = True
                        if s["first"] is None:
                            s["first"] = eid
                        s["last"] = eid
                        s["count"] += 1
                        if a.pause_every and n % a.pause_every == 0:
                            await asyncio.sleep(a.pause_ms / 1000)
                        continue
                    m = json.loads(msg)
                    kind = m.get("event_type")
                    if kind == "connection_established":
                        s["epoch"] = m.get("epoch")
                        if not told_ready:
                            print("ready", flush=True)
                            told_ready = True
                    elif kind == "stream_gap":
                        p = m["payload"]
                        if p.get("reason") == "reset":
                            s["resets"].append(p)
                            s["epoch"] = p.get("epoch")
                            s["last"] = p.get("resume_from", 0)
                            seen_any = False
                        else:
                            s["gaps"].append(p)
        except ConnectionClosed as e:
            s["closes"].append([e.rcvd.code if e.rcvd else None, e.rcvd.reason if e.rcvd else None])
        except (OSError, asyncio.TimeoutError) as e:
            s["closes"].append([None, repr(e)])
            if not a.reconnect:
                break
            await asyncio.sleep(0.2)
        if not a.reconnect:
            break
        url = with_query(a.url, since=s["last"], epoch=s["epoch"])
    print(json.dumps(s), flush=True)


asyncio.run(main())
