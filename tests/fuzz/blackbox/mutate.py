"""Byte-level mutations and delivery plans, all driven by a random.Random
so that a seed gives the same result."""

INTERESTING = [b"\r", b"\n", b"\r\n", b"\0", b" ", b"\t", b":", b";", b"\x7f", b"\xff", b"0", b"-",
               b"\r\n\r\n", b"%", b"/", b"..", b"\r\n ", b",", b"\"", b"="]

NUMBERS = ["0", "1", "-1", "+1", "00", "4294967296", "18446744073709551615", "18446744073709551616",
           "9223372036854775807", "99999999999999999999", "0x10", "1 1", " 7", "7 ", "1.0", "", "abc"]


def flip_bytes(rng, data, n=None):
    """Changes 1..n random bytes of `data` (random values or interesting ones)."""
    if not data:
        return data
    b = bytearray(data)
    for _ in range(n or rng.randint(1, 3)):
        i = rng.randrange(len(b))
        b[i] = rng.choice([rng.randrange(256), 0, 10, 13, 32, 58, 127, 255])
    return bytes(b)


def insert_bytes(rng, data):
    """Inserts an interesting token at a random position."""
    i = rng.randint(0, len(data))
    return data[:i] + rng.choice(INTERESTING) + data[i:]


def delete_bytes(rng, data):
    """Deletes a random run of 1..8 bytes."""
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randint(1, 8):]


def mutate_lines(rng, data):
    """Line-level: duplicate, drop or swap a CRLF-separated line, or turn
    one CRLF into a bare LF / CR."""
    lines = data.split(b"\r\n")
    if len(lines) < 2:
        return data
    i = rng.randrange(len(lines) - 1)
    op = rng.randrange(5)
    if op == 0:
        lines.insert(i, lines[i])
    elif op == 1 and i > 0:
        del lines[i]
    elif op == 2:
        j = rng.randrange(len(lines) - 1)
        lines[i], lines[j] = lines[j], lines[i]
    else:
        sep = rng.choice([b"\n", b"\r"])
        return b"\r\n".join(lines[:i + 1]) + sep + b"\r\n".join(lines[i + 1:])
    return b"\r\n".join(lines)


def mutate(rng, data, rounds=None):
    """1..3 random mutations of any kind above."""
    for _ in range(rounds or rng.randint(1, 3)):
        op = rng.randrange(4)
        data = (flip_bytes, insert_bytes, delete_bytes, mutate_lines)[op](rng, data)
    return data


def split_plan(rng, data, max_delay_ms=20, max_pieces=8):
    """Splits `data` at random byte boundaries into [(bytes, delay_s)]:
    usually one piece, else 2..max_pieces with 0..max_delay_ms pauses."""
    if len(data) < 2 or rng.random() < 0.5:
        return [(data, 0.0)]
    k = rng.randint(2, min(max_pieces, len(data)))
    cuts = sorted(rng.sample(range(1, len(data)), k - 1))
    out, prev = [], 0
    for c in cuts + [len(data)]:
        out.append((data[prev:c], rng.randint(0, max_delay_ms) / 1000.0))
        prev = c
    return out


def rand_token(rng, alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", lo=1, hi=12):
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))
