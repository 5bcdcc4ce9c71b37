"""A real SMTP server for Posta's end-to-end tests (aiosmtpd).

Three listeners on 127.0.0.1, ports chosen here and printed as one JSON
line on stdout once all accept connections:
  plain     no TLS, no AUTH
  starttls  STARTTLS required before anything else, AUTH PLAIN/LOGIN required
  tls       implicit TLS from the first byte, AUTH required

Every accepted message is parsed with Python's email package (an
independent MIME parser) and appended as one JSON line to OUT/received.jsonl,
with its raw bytes in OUT/N.eml. Recipients steer the replies:
  tempfail*@...  451 the first time this recipient is seen, then accepted
  reject*@...    550 always
  dropmid*@...   the first time: the connection is closed at RCPT, no reply
  *@DEFER        (with --defer-domain DEFER --defer-seconds N) 421 4.7.28
                 for N seconds from the first such recipient, as Gmail
                 answers a sender going too fast; each deferral is a line
                 in OUT/deferred.jsonl; with --hold-ms M each of its
                 messages accepted is held M ms before the reply to DATA
                 (a slow receiver, so calls in flight overlap)
  hangup*@...    accepted, then the server drops the connection when the
                 next command arrives (as an idle timeout would), so the
                 client's next message finds its kept connection gone
Signed messages are checked with dkimpy (an independent DKIM verifier):
the public keys come from OUT/dns/NAME (the TXT record for
NAME = SELECTOR._domainkey.DOMAIN), written by the test before it sends;
each record says whether the signature verifies as received ("dkim") and
after one body character is changed ("dkim_tampered"); both are null for
an unsigned message.
Each record has "started" (when MAIL FROM came) and "at" (when the
message was taken), so tests can count transactions in flight at once.
Every listener offers PIPELINING (aiosmtpd reads pipelined commands in
order; it just does not announce it). Each record names the client's port,
so tests can count connections.
The process exits when stdin closes (the test harness holds the pipe).
"""

import argparse
import asyncio
import email
import email.policy
import itertools
import json
import os
import re
import socket
import ssl
import sys
import threading
import time

import dkim
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER, PASSWORD = b"posta", os.environ.get("SMTP_PEER_PASSWORD", "s3cret pass").encode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Handler:
    def __init__(self, name, out, defer_domain=None, defer_seconds=0, hold_ms=0):
        self.name = name
        self.hold_ms = hold_ms
        self.out = out
        self.seen = set()
        self.lock = threading.Lock()
        self.defer_domain = defer_domain
        self.defer_seconds = defer_seconds
        self.defer_started = None

    def deferring(self, address):
        """Whether to defer this recipient now (and note it)."""
        if not self.defer_domain or address.split("@")[-1].lower() != self.defer_domain:
            return False
        now = time.time()
        with self.lock:
            if self.defer_started is None:
                self.defer_started = now
            if now - self.defer_started >= self.defer_seconds:
                return False
            with open(os.path.join(self.out, "deferred.jsonl"), "a") as f:
                f.write(json.dumps({"at": now, "rcpt": address}) + "\n")
        return True

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return responses[:-1] + ["250-PIPELINING"] + responses[-1:]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        return self.maybe_hang_up(server, session) or self.accept_mail(envelope, address, mail_options)

    async def handle_RSET(self, server, session, envelope):
        return self.maybe_hang_up(server, session) or "250 OK"

    @staticmethod
    def maybe_hang_up(server, session):
        if getattr(session, "hang_up", False):
            server.transport.abort()
            return "421 4.4.2 closing"
        return None

    @staticmethod
    def accept_mail(envelope, address, mail_options):
        envelope.started = time.time()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    def first_time(self, address):
        with self.lock:
            first = address not in self.seen
            self.seen.add(address)
        return first

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local.startswith("dropmid") and self.first_time(address):
            server.transport.abort()
            return "421 4.4.2 closing"
        if local.startswith("tempfail") and self.first_time(address):
            return "451 4.3.0 Temporary failure, try again later"
        if local.startswith("reject"):
            return "550 5.1.1 Mailbox unavailable"
        if self.deferring(address):
            return "421 4.7.28 Our system has detected an unusual rate of mail from your IP, try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.hold_ms and any(r.split("@")[-1].lower() == self.defer_domain for r in envelope.rcpt_tos):
            await asyncio.sleep(self.hold_ms / 1000)
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        parts = []
        for part in msg.walk():
            if part.is_multipart():
                continue
            parts.append(
                {
                    "content_type": part.get_content_type(),
                    "charset": part.get_content_charset(),
                    "transfer_encoding": part.get("Content-Transfer-Encoding"),
                    "content": part.get_content(),
                }
            )
        dkim_ok, dkim_tampered = dkim_results(raw, self.out)
        defects = [repr(d) for d in msg.defects]
        for part in msg.walk():
            defects += [repr(d) for d in part.defects]
        record = {
            "started": getattr(envelope, "started", None),
            "at": time.time(),
            "listener": self.name,
            "client_port": session.peer[1] if session.peer else None,
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            # The socket as it is now: TLS after STARTTLS or from the start.
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "tls_version": (server.transport.get_extra_info("ssl_object").version()
                            if server.transport.get_extra_info("ssl_object") else None),
            "auth_user": (session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None),
            "subject": str(msg["Subject"]),
            "from": str(msg["From"]),
            "from_display_name": msg["From"].addresses[0].display_name if msg["From"] else None,
            "to": str(msg["To"]),
            "to_display_name": msg["To"].addresses[0].display_name if msg["To"] else None,
            "message_id": msg["Message-ID"],
            "date": msg["Date"],
            "mime_version": msg["MIME-Version"],
            "content_type": msg.get_content_type(),
            "list_unsubscribe": msg["List-Unsubscribe"],
            "list_unsubscribe_post": msg["List-Unsubscribe-Post"],
            "parts": parts,
            "dkim": dkim_ok,
            "dkim_tampered": dkim_tampered,
            "defects": defects,
            "all_ascii": all(b < 128 for b in raw),
            # SMTP smuggling needs a CR or LF that is not part of a CRLF.
            "bare_cr": re.search(rb"\r(?!\n)", raw) is not None,
            "bare_lf": re.search(rb"(?<!\r)\n", raw) is not None,
        }
        with self.lock:
            n = next(COUNTER)
            with open(os.path.join(self.out, f"{n}.eml"), "wb") as f:
                f.write(raw)
            with open(os.path.join(self.out, "received.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")
        if any(r.split("@")[0].startswith("hangup") for r in envelope.rcpt_tos):
            # Close as an idle timeout would, but deterministically: the
            # next command on this connection finds it gone (a timer here
            # raced the client's next transaction).
            session.hang_up = True
        return f"250 2.0.0 Ok: queued as Q{n:06d}"


COUNTER = itertools.count(1)


def dkim_results(raw, out):
    """(verifies as received, verifies with its body changed), or Nones."""
    if b"\ndkim-signature:" not in b"\n" + raw.lower():
        return None, None

    def lookup(name, timeout=5):
        path = os.path.join(out, "dns", name.decode().rstrip("."))
        try:
            with open(path, "rb") as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    def verify(message):
        try:
            return bool(dkim.verify(message, dnsfunc=lookup))
        except Exception:
            return False

    head, sep, body = raw.partition(b"\r\n\r\n")
    i = next((k for k, b in enumerate(body) if chr(b).isalnum()), None)
    if i is not None:
        body = body[:i] + (b"X" if body[i:i + 1] != b"X" else b"Y") + body[i + 1:]
    return verify(raw), verify(head + sep + body)


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER and auth_data.password == PASSWORD
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--plain-port", type=int, default=0, help="the plain listener's port (default: any free one)")
    ap.add_argument("--defer-domain", default=None, help="the plain listener defers this domain's recipients")
    ap.add_argument("--defer-seconds", type=float, default=0)
    ap.add_argument("--hold-ms", type=int, default=0, help="hold each accepted message to the defer domain so long")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)

    ports = {"plain": args.plain_port or free_port(), "starttls": free_port(), "tls": free_port()}
    controllers = [
        Controller(
            Handler("plain", args.out, args.defer_domain, args.defer_seconds, args.hold_ms),
            hostname="127.0.0.1",
            port=ports["plain"],
        ),
        Controller(
            Handler("starttls", args.out),
            hostname="127.0.0.1",
            port=ports["starttls"],
            tls_context=ctx,
            require_starttls=True,
            authenticator=authenticator,
            auth_required=True,
        ),
        Controller(
            Handler("tls", args.out),
            hostname="127.0.0.1",
            port=ports["tls"],
            ssl_context=ctx,
            authenticator=authenticator,
            auth_required=True,
            # aiosmtpd only counts STARTTLS as encryption; this whole
            # connection is TLS from the first byte.
            auth_require_tls=False,
        ),
    ]
    for c in controllers:
        c.start()
    print(json.dumps(ports), flush=True)
    try:
        sys.stdin.read()
    finally:
        for c in controllers:
            c.stop()


if __name__ == "__main__":
    main()
