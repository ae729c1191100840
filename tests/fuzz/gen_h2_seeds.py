#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_h2_server (tests/fuzz/corpus_h2_server/).

Each seed is one options byte (see the comment at the top of
fuzz_h2_server.c) followed by what an HTTP/2 client sends after the
connection preface: its SETTINGS frame, then requests. Header blocks use a
tiny HPACK encoder (static-table indexes, literals without Huffman coding,
one dynamic-table entry). No dependencies: python3 gen_h2_seeds.py
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus_h2_server")

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20

# options byte
VIA_H2_START, FRAME_BY_FRAME, NO_READ = 1, 2, 4
END_FIN, END_CLOSE, END_DRAIN, END_KILL = 0, 8, 16, 24
JUMP_05S, JUMP_3S, JUMP_40S = 32, 64, 96
DRAINING = 128


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def hint(v, prefix, first=0):
    """HPACK integer with an N-bit prefix."""
    m = (1 << prefix) - 1
    if v < m:
        return bytes([first | v])
    out = [first | m]
    v -= m
    while v >= 128:
        out.append(v % 128 + 128)
        v //= 128
    out.append(v)
    return bytes(out)


def hstr(s):
    if isinstance(s, str):
        s = s.encode()
    return hint(len(s), 7) + s


STATIC = {(":authority", None): 1, (":method", "GET"): 2, (":method", "POST"): 3, (":path", "/"): 4,
          (":scheme", "http"): 6, (":scheme", "https"): 7, (":status", "200"): 8}
STATIC_NAMES = {":authority": 1, ":method": 2, ":path": 4, ":scheme": 6, "content-length": 28,
                "content-type": 31, "cookie": 32, "host": 38, "te": None, "user-agent": 58}


def hpack(headers, index_new=False):
    out = b""
    for name, value in headers:
        if (name, value) in STATIC:
            out += hint(STATIC[(name, value)], 7, 0x80)
        elif STATIC_NAMES.get(name):
            out += hint(STATIC_NAMES[name], 4) + hstr(value)
        elif index_new:
            out += b"\x40" + hstr(name) + hstr(value)  # literal with incremental indexing
        else:
            out += b"\x00" + hstr(name) + hstr(value)
    return out


def req(method="GET", path="/", authority="example.com", extra=()):
    return [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path)] + list(extra)


def headers(sid, hdrs, end_stream=True, flags=0):
    return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0) | flags, sid, hpack(hdrs))


def data(sid, payload, end_stream=False):
    return frame(DATA, END_STREAM if end_stream else 0, sid, payload)


SETTINGS0 = frame(SETTINGS, 0, 0, struct.pack(">HI", 3, 100) + struct.pack(">HI", 4, 65535))
SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def write(name, opt, body):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([opt]) + body)


def main():
    os.makedirs(OUT, exist_ok=True)
    s = SETTINGS0 + SETTINGS_ACK
    write("get", END_FIN, s + headers(1, req()))
    write("get_via_h2_start", VIA_H2_START | FRAME_BY_FRAME, s + headers(1, req("GET", "/get")))
    write("post_data", FRAME_BY_FRAME, s + headers(1, req("POST", "/up/echo", extra=[("content-length", "10")]), False)
          + data(1, b"hello") + data(1, b"world", True))
    write("post_trailers", FRAME_BY_FRAME, s + headers(1, req("POST", "/up/chunked", extra=[("te", "trailers")]), False)
          + data(1, b"body bytes") + headers(1, [("x-checksum", "abc"), ("grpc-status", "0")], True))
    write("continuation", FRAME_BY_FRAME,
          s + frame(HEADERS, END_STREAM, 1, hpack(req("GET", "/up/cl")[:2]))
          + frame(CONTINUATION, 0, 1, hpack(req()[2:3]))
          + frame(CONTINUATION, END_HEADERS, 1, hpack([(":path", "/up/cl"), ("user-agent", "fuzz")])))
    write("rst_stream", FRAME_BY_FRAME, s + headers(1, req("GET", "/up/hang")) + frame(RST_STREAM, 0, 1, struct.pack(">I", 8))
          + headers(3, req("POST", "/up/x"), False) + frame(RST_STREAM, 0, 3, struct.pack(">I", 0)))
    write("window_update", FRAME_BY_FRAME,
          s + headers(1, req("GET", "/big")) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20))
          + frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 100000)) + frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 0)))
    write("big_no_read", NO_READ | JUMP_40S, s + headers(1, req("GET", "/big")) + headers(3, req("GET", "/up/big"))
          + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 24)))
    write("ping", FRAME_BY_FRAME, s + frame(PING, 0, 0, b"12345678") + frame(PING, ACK, 0, b"87654321")
          + headers(1, req()) + frame(PING, 0, 0, b"short"))
    write("settings", FRAME_BY_FRAME,
          frame(SETTINGS, 0, 0, struct.pack(">HI", 1, 0) + struct.pack(">HI", 2, 0) + struct.pack(">HI", 4, 1)
                + struct.pack(">HI", 5, 16384) + struct.pack(">HI", 6, 100) + struct.pack(">HI", 8, 1)
                + struct.pack(">HI", 9, 1)) + SETTINGS_ACK + headers(1, req("GET", "/big"))
          + frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 1 << 20)))
    write("priority", FRAME_BY_FRAME,
          s + frame(PRIORITY, 0, 3, struct.pack(">IB", 1, 15)) + frame(PRIORITY, 0, 5, struct.pack(">IB", 0x80000003, 200))
          + frame(HEADERS, END_HEADERS | END_STREAM | PRIO, 7, struct.pack(">IB", 3, 10) + hpack(req("GET", "/up/cl")))
          + frame(PRIORITY, 0, 7, struct.pack(">IB", 7, 1)))
    write("goaway", FRAME_BY_FRAME, s + headers(1, req("GET", "/up/cl")) + frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0) + b"bye")
          + headers(3, req()))
    write("bad_hpack", END_CLOSE, s + frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x82\xff\xff\xff\xff\x0f\x86"))
    write("bad_hpack_huffman", END_FIN, s + frame(HEADERS, END_HEADERS | END_STREAM, 1,
                                                    b"\x82\x86\x84\x41\x8f\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"))
    many = b""
    routes = ["/up/cl", "/up/chunked", "/up/close", "/up/early", "/dead", "/deny", "/nobody", "/up/bad", "/up/short",
              "/up/reset", "/up/notmod", "/up/nocontent", "/delay/x", "/nothing/here"]
    for i, p in enumerate(routes):
        many += headers(1 + 2 * i, req("GET", p, extra=[("x-req", str(i))]))
    write("many_routes", FRAME_BY_FRAME | JUMP_3S, s + many)
    write("many_routes_at_once", END_DRAIN, s + many)
    write("grpc", FRAME_BY_FRAME, s + headers(1, req("POST", "/grpc/pkg.Svc/Method",
                                                    extra=[("content-type", "application/grpc"), ("te", "trailers"),
                                                           ("grpc-timeout", "1S")]), False)
          + data(1, b"\x00\x00\x00\x00\x02hi", True)
          + headers(3, req("POST", "/up/grpc", extra=[("content-type", "application/grpc+proto"), ("te", "trailers")]), False)
          + data(3, b"\x00\x00\x00\x00\x00") + headers(3, [("grpc-trailer", "x")], True))
    write("slow_body", FRAME_BY_FRAME | JUMP_3S, s + headers(1, req("POST", "/slowbody", extra=[("content-length", "1000")]), False)
          + data(1, b"a" * 10) + headers(3, req("PUT", "/up/x"), False) + data(3, b"b" * 100))
    write("head_request", FRAME_BY_FRAME, s + headers(1, req("HEAD", "/up/big")) + headers(3, req("HEAD", "/get"))
          + headers(5, req("POST", "/get")))
    write("delay", FRAME_BY_FRAME | JUMP_05S, s + headers(1, req("GET", "/delay/a")) + headers(3, req("POST", "/delay/b"), False)
          + data(3, b"xyz", True))
    # request validation (RFC 9113 §8)
    bad = [
        req(extra=[("Upper", "x")]),
        req(extra=[("connection", "close")]),
        req(extra=[("te", "gzip")]),
        [(":method", "GET"), (":scheme", "http"), (":path", "/")],  # no :authority nor host
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), ("host", "h.example:8080")],
        req(authority="bad host"),
        req(authority="[::1]:99999"),
        req("CONNECT"),
        req(extra=[("content-length", "abc")]),
        [(":method", "GET"), ("x-a", "1"), (":path", "/"), (":scheme", "http"), (":authority", "a")],
        req(extra=[("cookie", "a=1"), ("cookie", "b=2"), ("x-v", "a\x00b")]),
        req(path=""),
        req(extra=[(":protocol", "websocket")]),
        req(extra=[("x-long", "v" * 2100)]),
    ]
    blk = b""
    for i, h in enumerate(bad):
        blk += headers(1 + 2 * i, h)
    write("validation", FRAME_BY_FRAME, s + blk)
    write("content_length_mismatch", FRAME_BY_FRAME,
          s + headers(1, req("POST", "/up/x", extra=[("content-length", "3")]), False) + data(1, b"toolong", True))
    write("padded", FRAME_BY_FRAME,
          s + frame(HEADERS, END_HEADERS | PADDED, 1, b"\x04" + hpack(req("POST", "/up/p")) + b"\0\0\0\0")
          + frame(DATA, PADDED | END_STREAM, 1, b"\x03abc\0\0\0"))
    write("dynamic_table", FRAME_BY_FRAME,
          s + frame(HEADERS, END_HEADERS | END_STREAM, 1, hpack(req(extra=[("x-custom", "one")]), index_new=True))
          + frame(HEADERS, END_HEADERS | END_STREAM, 3, hpack(req()[:4]) + b"\xbe")
          + frame(HEADERS, END_HEADERS | END_STREAM, 5, b"\x20" + hpack(req())))
    rapid = b""
    for i in range(220):
        rapid += headers(1 + 2 * i, req("GET", "/up/hang")) + frame(RST_STREAM, 0, 1 + 2 * i, struct.pack(">I", 8))
    write("rapid_reset", END_KILL, s + rapid)
    cont = frame(HEADERS, 0, 1, hpack(req()[:2]))
    for _ in range(40):
        cont += frame(CONTINUATION, 0, 1, b"")
    write("continuation_flood", END_FIN, s + cont)
    empty = headers(1, req("POST", "/up/x"), False)
    for _ in range(110):
        empty += frame(DATA, 0, 1, b"")
    write("empty_data_flood", END_FIN, s + empty)
    write("idle_timeout", JUMP_40S | DRAINING, s + headers(1, req()))
    write("header_timeout", FRAME_BY_FRAME | JUMP_3S, s + frame(HEADERS, 0, 1, hpack(req()[:2])))
    write("data_on_closed_stream", FRAME_BY_FRAME, s + headers(1, req()) + data(1, b"late", True) + data(9, b"x")
          + frame(WINDOW_UPDATE, 0, 3, struct.pack(">I", 0)))
    write("early_answer_while_sending", FRAME_BY_FRAME,
          s + headers(1, req("POST", "/up/now/chunked"), False) + data(1, b"first") + data(1, b"second")
          + headers(1, [("x-late-trailer", "1")], True))
    body = b""
    for _ in range(4):
        body += data(1, b"q" * 1500)
    write("post_body_pieces", FRAME_BY_FRAME,
          s + headers(1, req("POST", "/up/upload", extra=[("content-length", "6000")]), False) + body
          + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20)) + data(1, b"", True))
    wu = b"".join(frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", 40000)) for sid in (0, 1, 0, 1, 0, 1, 0, 1))
    write("upstream_big_window_updates", FRAME_BY_FRAME,
          s + headers(1, req("GET", "/up/big")) + frame(PING, 0, 0, b"pingpong") + wu + headers(3, req("GET", "/up/big")) + wu)
    write("trailers_too_large", FRAME_BY_FRAME,
          s + headers(1, req("POST", "/up/t"), False) + data(1, b"abc")
          + headers(1, [("x-t%d" % i, "v" * 100) for i in range(30)], True))
    nonempty = frame(HEADERS, 0, 1, hpack(req()[:2]))
    for i in range(40):
        nonempty += frame(CONTINUATION, 0, 1, hpack([("x-c%d" % i, "1")]))
    write("continuation_flood_nonempty", END_FIN, s + nonempty)
    write("push_promise_from_client", FRAME_BY_FRAME, s + frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + hpack(req())))


if __name__ == "__main__":
    main()
