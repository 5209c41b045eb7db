"""Readiness checks that speak each service's own wire protocol (no client library)."""

from __future__ import annotations

import socket
import ssl
import struct


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def kafka_metadata(host: str, port: int, timeout: float = 3.0) -> bool:
    """A Metadata v1 request for all topics answers with at least one broker."""
    client = b"fraud-detection-stack"
    request = struct.pack(">hhih", 3, 1, 1, len(client)) + client + struct.pack(">i", -1)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _read_exact(sock, 4))
            correlation_id, brokers = struct.unpack(">ii", _read_exact(sock, size)[:8])
    except (OSError, struct.error):
        return False
    return correlation_id == 1 and brokers > 0


def _cql_frame(opcode: int, body: bytes) -> bytes:
    return struct.pack(">BBhBi", 4, 0, 0, opcode, len(body)) + body


def _cql_exchange(sock: socket.socket, opcode: int, body: bytes) -> int:
    sock.sendall(_cql_frame(opcode, body))
    _version, _flags, _stream, reply, length = struct.unpack(">BBhBi", _read_exact(sock, 9))
    _read_exact(sock, length)
    return reply


def cql_query(host: str, port: int, timeout: float = 5.0, tls: bool = False) -> bool:
    """STARTUP then a query on system.local over native protocol v4. Over TLS, a node
    that asks to authenticate after STARTUP is ready too."""
    def string(text: str) -> bytes:
        return struct.pack(">H", len(text)) + text.encode()

    startup = struct.pack(">H", 1) + string("CQL_VERSION") + string("3.0.0")
    query = b"SELECT release_version FROM system.local"
    query_body = struct.pack(">i", len(query)) + query + struct.pack(">HB", 1, 0)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock = raw
            if tls:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE  # readiness only; clients verify
                sock = context.wrap_socket(raw)
            reply = _cql_exchange(sock, 0x01, startup)
            if tls and reply == 0x03:  # AUTHENTICATE
                return True
            return reply == 0x02 and _cql_exchange(sock, 0x07, query_body) == 0x08
    except (OSError, struct.error):
        return False


def redis_ping(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
