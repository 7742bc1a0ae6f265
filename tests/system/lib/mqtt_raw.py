#!/usr/bin/env python3
"""Hand-made MQTT 3.1.1 packets over TLS, for provd's raw MQTT system tests.

usage: mqtt_raw.py HOST PORT CAFILE STEP...

Steps run in order on one connection; the first that fails prints why on
stderr and the exit status is 1. Steps (arguments after the name):
  connect CLIENT_ID USER PASS KEEPALIVE  CONNECT, clean session; USER/PASS '-' = absent
  raw HEX                                 send these bytes as they are
  sub FILTER QOS PID                      SUBSCRIBE
  unsub FILTER PID                        UNSUBSCRIBE
  pub TOPIC PAYLOAD QOS PID               PUBLISH (PID ignored at QoS 0)
  pubfile TOPIC FILE QOS PID              PUBLISH with the payload read from FILE
  ping                                    PINGREQ
  disconnect                              DISCONNECT
  expect_connack CODE                     next packet is CONNACK 0 CODE
  expect_suback PID CODES                 next packet is SUBACK (CODES: 1,128,...)
  expect_unsuback PID                     next packet is UNSUBACK
  expect_puback PID                       next packet is PUBACK
  expect_pingresp                         next packet is PINGRESP
  expect_publish                          next packet is a PUBLISH: prints "TOPIC PAYLOAD"
  silent SECONDS                          nothing arrives and the connection stays open
  closed SECONDS                          the server closes within SECONDS, sending nothing
  sleep SECONDS                           wait
Only the Python standard library is used.
"""
import socket
import ssl
import struct
import sys
import time


class Fail(Exception):
    pass


def enc_str(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def frame(first, body):
    rem = len(body)
    out = bytes([first])
    while True:
        b = rem & 0x7F
        rem >>= 7
        out += bytes([b | 0x80 if rem else b])
        if not rem:
            return out + body


class Conn:
    def __init__(self, host, port, cafile):
        ctx = ssl.create_default_context(cafile=cafile)
        raw = socket.create_connection((host, port), timeout=10)
        self.s = ctx.wrap_socket(raw, server_hostname=host)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def _fill(self, deadline):
        """Reads more bytes; returns False on EOF. Raises socket.timeout at the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self.s.settimeout(left)
        try:
            d = self.s.recv(65536)
        except (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError, ssl.SSLZeroReturnError):
            return False
        except ssl.SSLError as e:
            if "EOF" in str(e) or "closed" in str(e).lower():
                return False
            raise
        if not d:
            return False
        self.buf += d
        return True

    def packet(self, timeout=10.0):
        """Next packet as (first byte, body); Fail on EOF or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                rem, mult, i = 0, 1, 1
                while i < len(self.buf):
                    b = self.buf[i]
                    rem += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        break
                else:
                    i = -1
                if i > 0 and len(self.buf) >= i + rem:
                    first, body = self.buf[0], self.buf[i:i + rem]
                    self.buf = self.buf[i + rem:]
                    return first, body
            try:
                if not self._fill(deadline):
                    raise Fail("connection closed while a packet was expected")
            except socket.timeout:
                raise Fail("no packet within %.1f s" % timeout)

    def closed(self, seconds):
        deadline = time.monotonic() + seconds
        while True:
            if self.buf:
                raise Fail("server sent %r instead of closing" % self.buf[:64])
            try:
                if not self._fill(deadline):
                    return
            except socket.timeout:
                raise Fail("connection still open after %.1f s" % seconds)

    def silent(self, seconds):
        deadline = time.monotonic() + seconds
        while True:
            if self.buf:
                raise Fail("server sent %r, expected nothing" % self.buf[:64])
            try:
                if not self._fill(deadline):
                    raise Fail("connection closed, expected it to stay open")
            except socket.timeout:
                return


def expect(c, ptype, flags=0):
    first, body = c.packet()
    if first != (ptype << 4 | flags):
        raise Fail("expected packet type %d, got first byte 0x%02x body %r" % (ptype, first, body[:64]))
    return body


def publish(c, topic, payload, qos, pid):
    body = enc_str(topic) + (struct.pack(">H", pid) if qos else b"") + payload
    c.send(frame(0x30 | (qos << 1), body))


def run(argv):
    host, port, cafile = argv[0], int(argv[1]), argv[2]
    steps = argv[3:]
    c = Conn(host, port, cafile)
    i = 0

    def take(n):
        nonlocal i
        if i + n > len(steps):
            raise Fail("step %s needs %d arguments" % (steps[i - 1], n))
        v = steps[i:i + n]
        i += n
        return v

    while i < len(steps):
        name = steps[i]
        i += 1
        if name == "connect":
            cid, user, pw, ka = take(4)
            flags = 0x02 | (0x80 if user != "-" else 0) | (0x40 if pw != "-" else 0)
            body = enc_str("MQTT") + bytes([4, flags]) + struct.pack(">H", int(ka)) + enc_str(cid)
            if user != "-":
                body += enc_str(user)
            if pw != "-":
                body += enc_str(pw)
            c.send(frame(0x10, body))
        elif name == "raw":
            (hexs,) = take(1)
            c.send(bytes.fromhex(hexs))
        elif name == "sub":
            f, q, pid = take(3)
            c.send(frame(0x82, struct.pack(">H", int(pid)) + enc_str(f) + bytes([int(q)])))
        elif name == "unsub":
            f, pid = take(2)
            c.send(frame(0xA2, struct.pack(">H", int(pid)) + enc_str(f)))
        elif name == "pub":
            topic, payload, q, pid = take(4)
            publish(c, topic, payload.encode("utf-8"), int(q), int(pid))
        elif name == "pubfile":
            topic, path, q, pid = take(4)
            with open(path, "rb") as fh:
                publish(c, topic, fh.read(), int(q), int(pid))
        elif name == "ping":
            c.send(b"\xc0\x00")
        elif name == "disconnect":
            c.send(b"\xe0\x00")
        elif name == "expect_connack":
            (code,) = take(1)
            body = expect(c, 2)
            if body != bytes([0, int(code)]):
                raise Fail("CONNACK %r, expected return code %s" % (body, code))
        elif name == "expect_suback":
            pid, codes = take(2)
            body = expect(c, 9)
            want = struct.pack(">H", int(pid)) + bytes(int(x) for x in codes.split(","))
            if body != want:
                raise Fail("SUBACK %r, expected %r" % (body, want))
        elif name == "expect_unsuback":
            (pid,) = take(1)
            body = expect(c, 11)
            if body != struct.pack(">H", int(pid)):
                raise Fail("UNSUBACK %r" % body)
        elif name == "expect_puback":
            (pid,) = take(1)
            body = expect(c, 4)
            if body != struct.pack(">H", int(pid)):
                raise Fail("PUBACK %r, expected packet id %s" % (body, pid))
        elif name == "expect_pingresp":
            body = expect(c, 13)
            if body:
                raise Fail("PINGRESP with a body")
        elif name == "expect_publish":
            body = expect(c, 3)
            (tlen,) = struct.unpack(">H", body[:2])
            topic = body[2:2 + tlen].decode("utf-8")
            sys.stdout.write("%s %s\n" % (topic, body[2 + tlen:].decode("utf-8")))
            sys.stdout.flush()
        elif name == "silent":
            (secs,) = take(1)
            c.silent(float(secs))
        elif name == "closed":
            (secs,) = take(1)
            c.closed(float(secs))
        elif name == "sleep":
            (secs,) = take(1)
            time.sleep(float(secs))
        else:
            raise Fail("unknown step %s" % name)


def main():
    if len(sys.argv) < 4:
        sys.stderr.write(__doc__)
        return 2
    try:
        run(sys.argv[1:])
    except Fail as e:
        sys.stderr.write("mqtt_raw: %s\n" % e)
        return 1
    except (OSError, ssl.SSLError) as e:
        sys.stderr.write("mqtt_raw: %s: %s\n" % (type(e).__name__, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
