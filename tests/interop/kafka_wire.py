"""Just enough of the Kafka wire protocol, by hand, for test_bad_input.py.

Everything else in the interop suite goes through real clients; these helpers exist to send
what no well-behaved client would (oversized frames, garbage, unknown API keys and versions)
and to decode the few responses those tests look at.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

API_PRODUCE = 0
API_METADATA = 3
API_API_VERSIONS = 18

ERROR_NONE = 0
ERROR_UNKNOWN_TOPIC_OR_PARTITION = 3
ERROR_UNSUPPORTED_VERSION = 35


# -- primitive encoders --------------------------------------------------------------------


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint(n: int) -> bytes:
    """Zigzag-encoded signed varint (as in record fields)."""
    return uvarint((n << 1) ^ (n >> 63))


def string(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def compact_string(s: str) -> bytes:
    b = s.encode()
    return uvarint(len(b) + 1) + b


def request_header_v1(api_key: int, version: int, correlation_id: int, client_id: str = "interop") -> bytes:
    return struct.pack(">hhi", api_key, version, correlation_id) + string(client_id)


def request_header_v2(api_key: int, version: int, correlation_id: int, client_id: str = "interop") -> bytes:
    return request_header_v1(api_key, version, correlation_id, client_id) + uvarint(0)


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


# -- CRC-32C (Castagnoli), for record batches ----------------------------------------------

_CRC32C_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def record_batch(values: list[bytes], timestamp_ms: int | None = None) -> bytes:
    """An uncompressed record batch (magic 2) with null keys and no headers."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    records = b""
    for i, value in enumerate(values):
        body = (
            b"\x00"  # attributes
            + varint(0)  # timestamp delta
            + varint(i)  # offset delta
            + varint(-1)  # null key
            + varint(len(value))
            + value
            + varint(0)  # no headers
        )
        records += varint(len(body)) + body
    after_crc = (
        struct.pack(">hiqqqhii", 0, len(values) - 1, ts, ts, -1, -1, -1, len(values)) + records
    )
    crc = crc32c(after_crc)
    batch_length = 4 + 1 + 4 + len(after_crc)  # leader epoch, magic, crc, rest
    return struct.pack(">qiibI", 0, batch_length, -1, 2, crc) + after_crc


# -- requests ------------------------------------------------------------------------------


def api_versions_request(version: int, correlation_id: int) -> bytes:
    """ApiVersions with header v2 and the v3+ body (client software name and version)."""
    if version >= 3:
        body = compact_string("millrace-interop") + compact_string("1.0") + uvarint(0)
        return frame(request_header_v2(API_API_VERSIONS, version, correlation_id) + body)
    return frame(request_header_v1(API_API_VERSIONS, version, correlation_id))


def produce_v3_request(topic: str, partition: int, batch: bytes, correlation_id: int) -> bytes:
    body = (
        string(None)  # transactional id
        + struct.pack(">hi", -1, 10_000)  # acks=all, timeout
        + struct.pack(">i", 1)
        + string(topic)
        + struct.pack(">i", 1)
        + struct.pack(">i", partition)
        + struct.pack(">i", len(batch))
        + batch
    )
    return frame(request_header_v1(API_PRODUCE, 3, correlation_id) + body)


# -- responses -----------------------------------------------------------------------------


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError(f"response truncated at byte {self.pos} reading {fmt}")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def uvarint(self) -> int:
        shift = result = 0
        while True:
            b = self.take(">B")
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return s

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            # Read the size first: `self.pos += self.uvarint()` would add it to the position
            # from before the size was read.
            size = self.uvarint()
            self.pos += size

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos


@dataclass
class ApiVersions:
    error_code: int
    apis: dict[int, tuple[int, int]]  # api key -> (min, max)
    trailing: int  # bytes left after the decoded fields


def decode_api_versions_v0(body: bytes) -> ApiVersions:
    r = Reader(body)
    error = r.take(">h")
    apis = {}
    for _ in range(r.take(">i")):
        key, lo, hi = r.take(">hhh")
        apis[key] = (lo, hi)
    return ApiVersions(error, apis, r.remaining)


def decode_api_versions_v3(body: bytes) -> ApiVersions:
    r = Reader(body)
    error = r.take(">h")
    apis = {}
    for _ in range(r.uvarint() - 1):
        key, lo, hi = r.take(">hhh")
        r.skip_tagged_fields()
        apis[key] = (lo, hi)
    r.take(">i")  # throttle time
    r.skip_tagged_fields()
    return ApiVersions(error, apis, r.remaining)


def decode_produce_v3(body: bytes) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (error code, base offset)."""
    r = Reader(body)
    out = {}
    for _ in range(r.take(">i")):
        name = r.string()
        for _ in range(r.take(">i")):
            partition, error, base_offset, _log_append_time = r.take(">ihqq")
            out[(name, partition)] = (error, base_offset)
    r.take(">i")  # throttle time
    return out


# -- connections ---------------------------------------------------------------------------


class Connection:
    """A raw TCP connection to the broker that sends frames and reads size-prefixed
    responses."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def read_response(self, correlation_id: int, header_v1: bool = False) -> bytes:
        """The body of the next response, after checking its correlation id (header v0, or
        v1 with tagged fields when `header_v1`)."""
        (size,) = struct.unpack(">i", self._read_exact(4))
        payload = self._read_exact(size)
        r = Reader(payload)
        got = r.take(">i")
        assert got == correlation_id, f"correlation id {got}, expected {correlation_id}"
        if header_v1:
            r.skip_tagged_fields()
        return payload[r.pos :]

    def api_versions(self, correlation_id: int = 1) -> ApiVersions:
        self.send(api_versions_request(3, correlation_id))
        return decode_api_versions_v3(self.read_response(correlation_id))

    def closed_by_peer(self, timeout: float = 10.0) -> tuple[bool, bytes]:
        """Wait up to `timeout` for the broker to close the connection. Returns whether it
        did, and whatever bytes arrived first."""
        received = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, bytes(received)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False, bytes(received)
            except (ConnectionResetError, BrokenPipeError):
                return True, bytes(received)
            if not chunk:
                return True, bytes(received)
            received += chunk

    def send_ignoring_reset(self, data: bytes) -> None:
        """Send what we can; the broker may close the connection mid-way, which is fine."""
        try:
            self.sock.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            pass
