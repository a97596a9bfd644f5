#!/usr/bin/env python3
"""Open many logged-in, idle PostgreSQL sessions and hold them.

Used by bench/run to measure sluice's memory with 1,000 idle sessions.
Standard library only (asyncio + hashlib): no psycopg, no virtualenv, and one
process holds every session, so the client side stays cheap.

Each session: StartupMessage, password authentication (SCRAM-SHA-256, md5
or cleartext, whichever the server asks for), then one `SELECT 1` so the
session is known to be fully established end to end (through sluice that
means an upstream session exists too), then nothing.

Usage:
    PGPASSWORD=... idle_sessions.py --host 127.0.0.1 --port 6432 \
        --user bench --database bench --count 1000 [--concurrency 32] \
        [--hold-seconds 300]

Prints `READY <n>` on stdout once all sessions are open and idle (or
`FAILED <n-ok> <n-failed>: <first error>` and exits 1), then holds them until
SIGTERM/SIGINT or --hold-seconds pass, closes them politely (Terminate) and
prints `CLOSED <n>`.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import signal
import struct
import sys
import time


class PgError(Exception):
    pass


def _msg(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


def _error_text(payload: bytes) -> str:
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return f"{fields.get('S', 'ERROR')} {fields.get('C', '?????')}: {fields.get('M', '')}"


class Session:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    async def read(self):
        header = await self.reader.readexactly(5)
        kind = header[:1]
        (length,) = struct.unpack("!I", header[1:])
        payload = await self.reader.readexactly(length - 4)
        return kind, payload

    async def close(self):
        try:
            self.writer.write(_msg(b"X", b""))
            await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def _scram_client_final(password, client_first_bare, server_first, nonce):
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    server_nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
    if not server_nonce.startswith(nonce):
        raise PgError("SCRAM: server nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c=biws,r={server_nonce}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
    final = f"{without_proof},p={base64.b64encode(proof).decode()}"
    return final, base64.b64encode(server_signature).decode()


async def open_session(host, port, user, database, password, timeout):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    session = Session(reader, writer)
    try:
        await asyncio.wait_for(_login(session, user, database, password), timeout)
    except BaseException:
        writer.close()
        raise
    return session


async def _login(session, user, database, password):
    params = b""
    for name, value in (
        ("user", user),
        ("database", database),
        ("application_name", "sluice-bench-idle"),
    ):
        params += name.encode() + b"\0" + value.encode() + b"\0"
    params += b"\0"
    body = struct.pack("!I", 196608) + params
    session.writer.write(struct.pack("!I", len(body) + 4) + body)
    await session.writer.drain()

    nonce = client_first_bare = expected_server_signature = None
    while True:
        kind, payload = await session.read()
        if kind == b"E":
            raise PgError(_error_text(payload))
        if kind == b"R":
            (code,) = struct.unpack("!I", payload[:4])
            if code == 0:
                continue
            if code == 3:  # cleartext
                session.writer.write(_msg(b"p", password.encode() + b"\0"))
            elif code == 5:  # md5
                salt = payload[4:8]
                inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + salt).hexdigest()
                session.writer.write(_msg(b"p", b"md5" + outer.encode() + b"\0"))
            elif code == 10:  # SASL
                mechanisms = payload[4:].split(b"\0")
                if b"SCRAM-SHA-256" not in mechanisms:
                    raise PgError(f"no supported SASL mechanism in {mechanisms!r}")
                nonce = base64.b64encode(os.urandom(18)).decode()
                client_first_bare = f"n=,r={nonce}"
                first = ("n,," + client_first_bare).encode()
                session.writer.write(
                    _msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
                )
            elif code == 11:  # SASL continue
                final, expected_server_signature = _scram_client_final(
                    password, client_first_bare, payload[4:].decode(), nonce
                )
                session.writer.write(_msg(b"p", final.encode()))
            elif code == 12:  # SASL final
                attrs = dict(
                    item.split("=", 1) for item in payload[4:].decode().split(",")
                )
                if attrs.get("v") != expected_server_signature:
                    raise PgError("SCRAM: server signature does not match")
                continue
            else:
                raise PgError(f"unsupported authentication request {code}")
            await session.writer.drain()
        elif kind == b"Z":
            break
        # 'S' ParameterStatus, 'K' BackendKeyData, 'N' notices: ignored.

    session.writer.write(_msg(b"Q", b"SELECT 1\0"))
    await session.writer.drain()
    while True:
        kind, payload = await session.read()
        if kind == b"E":
            raise PgError(_error_text(payload))
        if kind == b"Z":
            return


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--hold-seconds", type=float, default=300.0)
    args = parser.parse_args()
    password = os.environ.get("PGPASSWORD", "")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    sessions, errors = [], []
    gate = asyncio.Semaphore(args.concurrency)

    async def one():
        async with gate:
            if errors:
                return
            try:
                sessions.append(
                    await open_session(
                        args.host, args.port, args.user, args.database, password,
                        args.connect_timeout,
                    )
                )
            except (PgError, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                errors.append(f"{type(e).__name__}: {e}")

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(args.count)))
    elapsed = time.monotonic() - started
    if errors:
        print(f"FAILED {len(sessions)} {len(errors)}: {errors[0]}", flush=True)
        await asyncio.gather(*(s.close() for s in sessions))
        return 1
    print(f"READY {len(sessions)} {elapsed:.2f}s", flush=True)

    try:
        await asyncio.wait_for(stop.wait(), args.hold_seconds)
    except asyncio.TimeoutError:
        pass

    # A session the gateway dropped while idle shows up as EOF here.
    dropped = sum(1 for s in sessions if s.reader.at_eof())
    await asyncio.gather(*(s.close() for s in sessions))
    print(f"CLOSED {len(sessions)} dropped_while_idle={dropped}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
