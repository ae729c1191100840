"""Raw HTTP/2 framing shared by the fuzzer's client and its h2c upstream.

Frames are built and parsed by hand (not with python-h2) so that any
length, type, flag or stream id can be sent. Header blocks are encoded as
HPACK literals without indexing (no dynamic-table state to keep in sync),
optionally with static-table indexes; decoding what Portico sends uses the
`hpack` package that comes with python3-h2.
"""

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

# A few static-table entries (RFC 7541 Appendix A) for indexed fields.
STATIC = {(":method", "GET"): 2, (":method", "POST"): 3, (":path", "/"): 4, (":scheme", "http"): 6,
          (":status", "200"): 8, (":status", "204"): 9, (":status", "304"): 11, (":status", "404"): 13,
          (":status", "500"): 14}


def frame(ftype, flags, sid, payload=b"", length=None):
    """One frame; `length` overrides the length field (a lie, for fuzzing)."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n & 0xFFFFFF)[1:] + bytes([ftype & 0xFF, flags & 0xFF]) + \
        struct.pack(">I", sid & 0xFFFFFFFF) + payload


def hpack_int(n, prefix, first=0):
    """HPACK integer with an N-bit prefix; `first` holds the high bits."""
    limit = (1 << prefix) - 1
    if n < limit:
        return bytes([first | n])
    out = bytearray([first | limit])
    n -= limit
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def hpack_str(b):
    if isinstance(b, str):
        b = b.encode("latin-1")
    return hpack_int(len(b), 7) + b


def encode_headers(fields, use_static=True):
    """A header block: static-indexed where possible, else literals
    without indexing (0x00 + name + value)."""
    out = bytearray()
    for name, value in fields:
        idx = STATIC.get((name, value)) if use_static else None
        if idx:
            out += hpack_int(idx, 7, 0x80)
        else:
            out += b"\x00" + hpack_str(name) + hpack_str(value)
    return bytes(out)


def headers_frames(sid, block, end_stream, pieces=1, max_piece=16384):
    """HEADERS (+ CONTINUATION frames) carrying `block`, split in `pieces`."""
    pieces = max(1, pieces)
    step = max(1, min(max_piece, -(-len(block) // pieces)))
    parts = [block[i:i + step] for i in range(0, len(block), step)] or [b""]
    out = bytearray()
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        flags = END_HEADERS if last else 0
        if i == 0:
            out += frame(HEADERS, flags | (END_STREAM if end_stream else 0), sid, part)
        else:
            out += frame(CONTINUATION, flags, sid, part)
    return bytes(out)


def settings(pairs, ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k & 0xFFFF, v & 0xFFFFFFFF)
                                                          for k, v in pairs))


def window_update(sid, incr):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", incr & 0xFFFFFFFF))


def rst_stream(sid, code):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code & 0xFFFFFFFF))


def goaway(last_sid, code, debug=b""):
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_sid & 0x7FFFFFFF, code & 0xFFFFFFFF) + debug)


def priority(sid, dep, weight, exclusive=False):
    return frame(PRIORITY, 0, sid, struct.pack(">IB", (dep & 0x7FFFFFFF) | (0x80000000 if exclusive else 0),
                                               weight & 0xFF))


def ping(data=b"\0" * 8, ack=False):
    return frame(PING, ACK if ack else 0, 0, data)


class FrameReader:
    """Splits a byte stream into (type, flags, stream id, payload)."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        out = []
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                break
            ftype, flags = self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            out.append((ftype, flags, sid, bytes(self.buf[9:9 + n])))
            del self.buf[:9 + n]
        return out


def strip_padding_priority(ftype, flags, payload):
    """The header-block fragment of a HEADERS frame (or DATA payload)
    without padding and priority fields; None if malformed."""
    pad = 0
    if flags & PADDED:
        if not payload:
            return None
        pad = payload[0]
        payload = payload[1:]
    if ftype == HEADERS and flags & PRIO_FLAG:
        payload = payload[5:]
    if pad > len(payload):
        return None
    return payload[:len(payload) - pad]
