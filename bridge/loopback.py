"""The desk fast path's second endpoint: 127.0.0.1, a random port, a secret drawn at each agent start.

Where there is no Unix socket with a peer-uid check (Windows, macOS), or where
``handoff_endpoint = tcp`` chooses it, the desk agent listens on 127.0.0.1 on a
port the system picks and writes ``<data_dir>/agent/handoff.tcp``: that port and
a 32-byte secret drawn fresh at every start, written atomically (a temp file
renamed over it), removed at a clean stop. On POSIX the file is 0600 in the 0700
directory, and a launch refuses a file or directory of another owner or with
bits for others. On Windows the file is in the user's profile (``%LOCALAPPDATA%``,
whose ACL grants only the user, SYSTEM and the administrators): that ACL is what
keeps the secret the user's.

Any local process may connect to the port, so each connection proves that both
ends know the secret, without sending it (HMAC-SHA256, 32-byte nonces):

    launch -> agent    client nonce
    agent  -> launch   HMAC(secret, "agent\\0" + client nonce) + server nonce
    launch -> agent    HMAC(secret, "launch\\0" + server nonce + client nonce), then the frame
    agent  -> launch   "ok ..." once the event is in the outbox (fsync'd), as on the Unix socket

The launch checks the agent's proof before it sends anything more: a process
that squats the port after the agent died (a stale handoff.tcp) gets a random
nonce, never the frame (argv, the TCX_BRIDGE_ environment, perhaps the broker's
password), and nothing derived from the secret. The agent checks the launch's
proof before it reads the frame and closes a connection that fails. The proofs
are bound to both nonces and labelled, so no answer of the agent serves as a
launch's proof, nor one connection's proof in another. What another local user
can still do is keep all the agent's hand-off slots busy (16 connections at once,
up to its read timeout each): launches then publish themselves, nothing is lost.

A launch imports this module only on this endpoint; its HMAC is written out over
the interpreter's built-in SHA-256 (``_sha256``, ``_sha2`` since 3.12) because
``import hmac`` loads OpenSSL (``_hashlib``): about 3 ms of every launch against
0.3 ms; tests/test_handoff_tcp.py checks it against ``hmac.digest``.
"""

from __future__ import annotations

import _socket
import os
import time
from _operator import _compare_digest as compare_digest  # hmac.compare_digest without OpenSSL

from bridge import handoff

FILE = "handoff.tcp"  # in handoff.DIRECTORY, mode 0600
MAGIC = "tcx-handoff-tcp-1"  # the file's first word
HOST = "127.0.0.1"
NONCE = 32  # bytes of each side's nonce, and of a proof (SHA-256)
SECRET = 32  # bytes
_BLOCK = 64  # SHA-256's block size (RFC 2104's B)
_INNER = bytes(x ^ 0x36 for x in range(256))
_OUTER = bytes(x ^ 0x5C for x in range(256))
_READ_FLAGS = (  # O_NONBLOCK: a FIFO planted as the file held a launch (or the agent) in open() for good
    os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
)


def _sha256(data: bytes) -> bytes:
    try:
        from _sha2 import sha256  # type: ignore[import-not-found, unused-ignore]  # Python 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found, no-redef, unused-ignore]  # 3.11
        except ImportError:  # an interpreter built without them
            from hashlib import sha256
    digest: bytes = sha256(data).digest()
    return digest


def mac(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104), as ``hmac.digest(key, message, "sha256")``."""
    if len(key) > _BLOCK:
        key = _sha256(key)
    key = key.ljust(_BLOCK, b"\0")
    return _sha256(key.translate(_OUTER) + _sha256(key.translate(_INNER) + message))


def agent_proof(secret: bytes, client_nonce: bytes) -> bytes:
    return mac(secret, b"agent\0" + client_nonce)


def launch_proof(secret: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return mac(secret, b"launch\0" + server_nonce + client_nonce)


# the agent's side -------------------------------------------------------------
def write_endpoint(directory: str | os.PathLike[str], port: int) -> bytes:
    """Write the endpoint file (atomically, mode 0600) for port with a new secret; the secret."""
    secret = os.urandom(SECRET)
    path = os.path.join(directory, FILE)
    temp = os.path.join(directory, f".{FILE}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        os.unlink(temp)  # left by a killed agent of the same pid: it may have other bits
    except FileNotFoundError:
        pass
    handle = os.open(temp, flags | os.O_EXCL, 0o600)
    try:
        os.write(handle, f"{MAGIC} {port} {secret.hex()}\n".encode())
        os.fsync(handle)
    finally:
        os.close(handle)
    os.replace(temp, path)
    return secret


def remove_endpoint(directory: str | os.PathLike[str], secret: bytes) -> None:
    """Remove the endpoint file if it is still this agent's (another may have started since)."""
    path = os.path.join(directory, FILE)
    try:
        file = os.open(path, _READ_FLAGS)
        try:
            mine = secret.hex().encode() in os.read(file, 256)
        finally:
            os.close(file)
        if mine:
            os.unlink(path)
    except OSError:
        pass


def admit(connection: _socket.socket, secret: bytes, timeout: float) -> str | None:
    """The agent's half of the proofs on a new connection: None when the launch proved it knows the
    secret, else why not (for the log: never a nonce or a proof). timeout: seconds for all of it."""
    deadline = time.monotonic() + timeout
    client_nonce = receive(connection, NONCE, deadline)
    if len(client_nonce) < NONCE:
        return f"no nonce ({len(client_nonce)} of {NONCE} bytes)"
    server_nonce = os.urandom(NONCE)
    connection.sendall(agent_proof(secret, client_nonce) + server_nonce)
    proof = receive(connection, NONCE, deadline)
    if len(proof) < NONCE:
        return f"no proof ({len(proof)} of {NONCE} bytes)"
    if not compare_digest(proof, launch_proof(secret, server_nonce, client_nonce)):
        return "a wrong proof (not the secret of this agent's handoff.tcp)"
    return None


def receive(connection: _socket.socket, size: int, deadline: float) -> bytes:
    """Exactly size bytes, or fewer when the peer closed or the deadline passed."""
    got = b""
    try:
        while len(got) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            connection.settimeout(left)
            chunk = connection.recv(size - len(got))
            if not chunk:
                break
            got += chunk
    except TimeoutError:
        pass
    return got


# the launch's side ------------------------------------------------------------
def read_endpoint(directory: str | os.PathLike[str]) -> tuple[int, bytes] | bytes:
    """The agent's port and secret from its endpoint file; bytes saying why not (no file: ``no agent``)."""
    path = os.path.join(directory, FILE)
    try:
        if os.name == "posix":
            handle = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                unsafe = handoff.private(os.fstat(handle))
                if unsafe:
                    return f"{directory} is not private ({unsafe})".encode()
                file = os.open(FILE, _READ_FLAGS, dir_fd=handle)
            finally:
                os.close(handle)
        else:  # Windows: the profile's ACL keeps it the user's
            file = os.open(path, _READ_FLAGS)
    except OSError:
        return b"no agent"  # no directory or no file: no agent runs (or ran) here on this endpoint
    try:
        if os.name == "posix":
            unsafe = handoff.private(os.fstat(file))
            if unsafe:
                return f"{path} is not private ({unsafe})".encode()
        raw = os.read(file, 256)
    except OSError as error:
        return f"no agent ({error.strerror or error})".encode()
    finally:
        os.close(file)
    fields = raw.split()
    try:
        magic, port, secret = fields[0].decode(), int(fields[1]), bytes.fromhex(fields[2].decode())
    except (IndexError, ValueError):
        return f"{path} is not an endpoint file".encode()
    if len(fields) != 3 or magic != MAGIC or not 0 < port < 65536 or len(secret) != SECRET:
        return f"{path} is not an endpoint file".encode()
    return port, secret


def send(frame: bytes, directory: str | os.PathLike[str], timeout: float) -> bytes:
    """bridge.handoff.send on this endpoint: the agent's answer (``ok ...``), or why there is none."""
    deadline = time.monotonic() + timeout
    found = read_endpoint(directory)
    if isinstance(found, bytes):
        return found
    port, secret = found
    connection = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        connection.settimeout(max(deadline - time.monotonic(), 0.001))
        connection.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        try:
            connection.connect((HOST, port))
        except OSError as error:  # a stale file: no agent listens there
            return f"no agent ({error.strerror or error})".encode()
        return _exchange(connection, secret, frame, deadline)
    finally:
        connection.close()


def _exchange(connection: _socket.socket, secret: bytes, frame: bytes, deadline: float) -> bytes:
    try:
        client_nonce = os.urandom(NONCE)
        connection.sendall(client_nonce)
        answer = receive(connection, 2 * NONCE, deadline)
        if len(answer) < 2 * NONCE and time.monotonic() >= deadline:
            return b"the agent did not answer in time"
        proof, server_nonce = answer[:NONCE], answer[NONCE:]
        if len(answer) < 2 * NONCE or not compare_digest(proof, agent_proof(secret, client_nonce)):
            return b"the hand-off port did not prove it is the agent (a stale handoff.tcp?)"
        connection.sendall(launch_proof(secret, server_nonce, client_nonce) + frame)
        connection.shutdown(_socket.SHUT_WR)
    except OSError as error:
        return f"the hand-off failed ({error.strerror or error})".encode()
    return handoff.read_answer(connection, deadline)
