#!/usr/bin/env python3
"""Webhook server for provd's tests (unit test test_webhook and system tests).

Stands in for a custom allocation webhook (DPS AllocationRequest in, answer out)
and for the receiver of the hub webhook connector (create/delete identity).
Python 3 standard library only.

    webhook_server.py --listen 127.0.0.N:PORT [--tls-cert F --tls-key F]
                      [--log FILE] [--mode MODE] [--delay S]

PORT 0 lets the kernel choose; the bound address is printed on stdout as one
line "LISTEN 127.0.0.N:PORT" (flushed) once the server accepts connections.

Every request is appended to the log file, before it is answered, as one JSON
line: {"time", "method", "path" (with the query), "headers" (content-type,
content-length, accept, user-agent, expect, authorization), "body" (the JSON
value sent, or {"raw": text} when it is not JSON)}.

Modes (--mode is the default; a request whose path starts with /MODE uses
that mode instead, so one server can play every part):
  allocate-first       200 {"iotHubHostName": linkedHubs[0],
                            "initialTwin": {"tags": {"allocatedBy": "webhook"},
                                            "properties": {"desired": {"fromWebhook": true}}},
                            "payload": {"fromWebhook": true, "echo": <device payload or null>}}
  allocate-by-payload  as allocate-first, hub = deviceRuntimeContext.payload.hub
                       (400 text when the device sent none)
  allocate-unlinked    200 with a hub that is not in linkedHubs
  nohub                200 {"payload": {...}} without iotHubHostName
  slow                 sleeps --delay seconds (default 30), then as allocate-first
  fail                 400 text/plain "cannot place this device"
  badjson              200 application/json "{not json"
  notobject            200 application/json "[1,2,3]"
  big                  200 with a JSON object of about 100 KB
  redirect             302 to /allocate-first (a client must not follow it)
  empty                200 with an empty body
  hub-accept           200 {"ok": true} (webhook connector)
  hub-fail             500 text/plain "hub refused the identity"
"""

import argparse
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = (
    "allocate-first",
    "allocate-by-payload",
    "allocate-unlinked",
    "nohub",
    "slow",
    "fail",
    "badjson",
    "notobject",
    "big",
    "redirect",
    "empty",
    "hub-accept",
    "hub-fail",
)
LOGGED_HEADERS = ("content-type", "content-length", "accept", "user-agent", "expect",
                  "authorization")
MAX_BODY = 1024 * 1024


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle or stalled client frees its thread

    def log_message(self, fmt, *args):  # quiet: the JSON log is the record
        pass

    # -- helpers ----------------------------------------------------------

    def _mode(self):
        first = self.path.split("?", 1)[0].lstrip("/").split("/", 1)[0]
        return first if first in MODES else self.server.mode

    def _read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n < 0 or n > MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(n) if n else b""

    def _log(self, raw):
        try:
            body = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError):
            body = {"raw": raw.decode("utf-8", "replace")}
        entry = {
            "time": time.time(),
            "method": self.command,
            "path": self.path,
            "headers": {h: self.headers[h] for h in LOGGED_HEADERS if h in self.headers},
            "body": body,
        }
        if self.server.log_path:
            line = json.dumps(entry, sort_keys=True) + "\n"
            with self.server.log_lock, open(self.server.log_path, "a", encoding="utf-8") as f:
                f.write(line)
        return body

    def _send(self, status, body, ctype="application/json", extra=None):
        data = body if isinstance(body, bytes) else body.encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            pass  # the client gave up (slow mode after its timeout)

    def _send_json(self, status, obj):
        self._send(status, json.dumps(obj))

    def _allocation(self, req, hub):
        ctx = req.get("deviceRuntimeContext") or {}
        return {
            "iotHubHostName": hub,
            "initialTwin": {
                "tags": {"allocatedBy": "webhook"},
                "properties": {"desired": {"fromWebhook": True}},
            },
            "payload": {"fromWebhook": True, "echo": ctx.get("payload")},
        }

    def _first_hub(self, req):
        hubs = req.get("linkedHubs") if isinstance(req, dict) else None
        return hubs[0] if isinstance(hubs, list) and hubs else None

    # -- modes ------------------------------------------------------------

    def _answer(self, mode, req):
        if mode in ("allocate-first", "slow"):
            if mode == "slow":
                time.sleep(self.server.delay)
            hub = self._first_hub(req)
            if hub is None:
                return self._send(400, "no linkedHubs in the request", "text/plain")
            return self._send_json(200, self._allocation(req, hub))
        if mode == "allocate-by-payload":
            ctx = req.get("deviceRuntimeContext") if isinstance(req, dict) else None
            payload = (ctx or {}).get("payload")
            hub = payload.get("hub") if isinstance(payload, dict) else None
            if not isinstance(hub, str):
                return self._send(400, "the device sent no payload.hub", "text/plain")
            return self._send_json(200, self._allocation(req, hub))
        if mode == "allocate-unlinked":
            return self._send_json(200, self._allocation(req, "not-linked.example.test"))
        if mode == "nohub":
            return self._send_json(200, {"payload": {"fromWebhook": True}})
        if mode == "fail":
            return self._send(400, "cannot place this device", "text/plain")
        if mode == "badjson":
            return self._send(200, "{not json")
        if mode == "notobject":
            return self._send(200, "[1,2,3]")
        if mode == "big":
            hub = self._first_hub(req) or "hub1.example.test"
            obj = self._allocation(req, hub)
            obj["payload"]["padding"] = "x" * (100 * 1024)
            return self._send_json(200, obj)
        if mode == "redirect":
            return self._send(302, "", "text/plain", {"Location": "/allocate-first"})
        if mode == "empty":
            return self._send(200, b"", "application/json")
        if mode == "hub-accept":
            return self._send_json(200, {"ok": True})
        if mode == "hub-fail":
            return self._send(500, "hub refused the identity", "text/plain")
        return self._send(500, "unknown mode", "text/plain")

    def do_POST(self):
        try:
            raw = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return self._send(400, "bad request body", "text/plain")
        req = self._log(raw)
        self._answer(self._mode(), req if isinstance(req, dict) else {})

    def do_GET(self):
        self._log(b"")
        self._send(405, "POST only", "text/plain", {"Allow": "POST"})

    do_PUT = do_DELETE = do_GET


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a slow request never holds up shutdown
    allow_reuse_address = True

    def __init__(self, addr, args):
        self.mode = args.mode
        self.delay = args.delay
        self.log_path = args.log
        self.log_lock = threading.Lock()
        self.tls = None
        if args.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
            self.tls = ctx
        super().__init__(addr, Handler)

    def get_request(self):
        sock, peer = self.socket.accept()
        if self.tls is not None:
            # The handshake runs on the first read, in the request's own thread,
            # so a client that never completes it blocks nobody.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, peer

    def handle_error(self, request, client_address):
        pass  # TLS failures and resets are expected in tests (untrusted CA, timeouts)


def parse_listen(text):
    host, _, port = text.rpartition(":")
    if not host.startswith("127."):
        raise argparse.ArgumentTypeError("listen on a 127.0.0.x address only")
    return host, int(port)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--listen", type=parse_listen, required=True, help="127.0.0.N:PORT (0: any)")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--log")
    ap.add_argument("--mode", choices=MODES, default="allocate-first")
    ap.add_argument("--delay", type=float, default=30.0, help="seconds slow mode sleeps")
    args = ap.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")

    srv = Server(args.listen, args)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    host, port = srv.socket.getsockname()[:2]
    sys.stdout.write("LISTEN %s:%d\n" % (host, port))
    sys.stdout.flush()
    srv.serve_forever()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
    except (OSError, socket.error) as e:
        sys.stderr.write("webhook_server: %s\n" % e)
        sys.exit(1)
