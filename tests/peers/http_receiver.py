"""A real HTTP receiver for Posta's webhook tests (Python's http.server).

Listens on 127.0.0.1 at a free port, printed as {"port": N} on stdout.
Every request is appended to OUT/requests.jsonl (path, headers, body as
text) before the answer, which depends on the path:
  /ok      200 {"id": "r-N"}
  /flaky   503 with Retry-After: 1 the first time an Idempotency-Key is
           seen, 200 afterwards
  /busy    503 always
  /gone    410
  /slow    waits 5 s, then 200
  /huge    200 with a 4 MiB JSON body: {"id": "r-N", "pad": "xxx…"}
  /events-flaky  500 the first two times an X-Posta-Event-Id is seen,
                 200 from the third
  /events-hang   the first time an X-Posta-Event-Id is seen: no answer
                 for 120 s (the test kills the sender meanwhile); 200 after
Connections are kept alive (HTTP/1.1); each record names the client's
port, so tests can count connections. The process exits when stdin closes.
"""

import argparse
import itertools
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
SEEN = set()
EVENTS = {}
COUNTER = itertools.count(1)


class Receiver(BaseHTTPRequestHandler):
    out = None
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        key = self.headers.get("Idempotency-Key")
        event = self.headers.get("X-Posta-Event-Id")
        with LOCK:
            n = next(COUNTER)
            first = key not in SEEN
            SEEN.add(key)
            EVENTS[event] = EVENTS.get(event, 0) + 1
            event_seen = EVENTS[event]
            with open(os.path.join(self.out, "requests.jsonl"), "a") as f:
                f.write(
                    json.dumps(
                        {
                            "n": n,
                            "path": self.path,
                            "client_port": self.client_address[1],
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body.decode("utf-8"),
                        }
                    )
                    + "\n"
                )
        if self.path == "/flaky" and first:
            self.answer(503, b"busy", [("Retry-After", "1")])
        elif self.path == "/busy":
            self.answer(503, b"busy")
        elif self.path == "/gone":
            self.answer(410, b"gone for good")
        elif self.path == "/events-flaky" and event_seen <= 2:
            self.answer(500, b"try again")
        elif self.path == "/events-hang" and event_seen == 1:
            time.sleep(120)
            self.answer(200, b"too late")
        elif self.path == "/huge":
            pad = "x" * (4 << 20)
            self.answer(200, json.dumps({"id": f"r-{n}", "pad": pad}).encode())
        elif self.path == "/slow":
            time.sleep(5)
            self.answer(200, b"late")
        else:
            self.answer(200, json.dumps({"id": f"r-{n}"}).encode())

    def answer(self, status, body, headers=()):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    Receiver.out = args.out
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
