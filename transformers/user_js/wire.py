"""Frames between the processor and its JavaScript workers: a small JSON header and a raw body.

A frame is `!II` (header length, body length), the header (JSON object) and the body (bytes: code and
events on the way in, the runtime's JSON answer on the way out). Both sides read exact lengths, so a
frame can be any size and one socket carries many requests back to back.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import orjson

PREFIX = struct.Struct("!II")

# Workers' control messages to and from the zygote (a SOCK_SEQPACKET socket: one message per send).
FORK = b"F"  # + the worker's socket as SCM_RIGHTS; answer: pid
REAP = b"R"  # + pid; answer: the wait status, once the worker has exited
PID = struct.Struct("!q")


def frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    head = orjson.dumps(header)
    return PREFIX.pack(len(head), len(body)) + head + body


def send_frame(sock: socket.socket, header: dict[str, Any], body: bytes) -> None:
    """A frame onto a blocking socket, the body sent from where it lies."""
    head = orjson.dumps(header)
    sock.sendall(PREFIX.pack(len(head), len(body)) + head)
    if body:
        sock.sendall(body)


def append_frame(buf: bytearray, header: dict[str, Any], *body: bytes) -> None:
    """A frame whose body is the parts `body`, added to `buf` without joining them first."""
    head = orjson.dumps(header)
    buf += PREFIX.pack(len(head), sum(len(part) for part in body))
    buf += head
    for part in body:
        buf += part


def read_exact(sock: socket.socket, size: int) -> bytes | None:
    """`size` bytes from a blocking socket, or None at end of stream."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(buf)


def read_frame(sock: socket.socket) -> tuple[dict[str, Any], bytes] | None:
    """The next frame from a blocking socket, or None at end of stream."""
    prefix = read_exact(sock, PREFIX.size)
    if prefix is None:
        return None
    head_len, body_len = PREFIX.unpack(prefix)
    head = read_exact(sock, head_len)
    body = read_exact(sock, body_len) if body_len else b""
    if head is None or body is None:
        return None
    return orjson.loads(head), body


class FrameReader:
    """Frames out of a non-blocking byte stream, as the bytes arrive."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[dict[str, Any], bytes]]:
        self._buf += data
        frames = []
        while len(self._buf) >= PREFIX.size:
            head_len, body_len = PREFIX.unpack_from(self._buf)
            end = PREFIX.size + head_len + body_len
            if len(self._buf) < end:
                break
            head = orjson.loads(self._buf[PREFIX.size:PREFIX.size + head_len])
            body = bytes(self._buf[PREFIX.size + head_len:end])
            del self._buf[:end]
            frames.append((head, body))
        return frames
