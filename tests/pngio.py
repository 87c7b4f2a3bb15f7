"""8-bit PNG encode/decode in plain Python, independent of the engine's libpng
writer (so the tests can check what it writes): gray, gray+alpha, RGB, RGBA;
no palette, no interlace."""
import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}  # colour type -> channels


def chunks(data):
    """[(kind, body)] up to IEND, checking the signature and every CRC."""
    if data[:8] != SIGNATURE:
        raise ValueError("not a PNG (bad signature)")
    pos, out = 8, []
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        if pos + 12 + length > len(data):
            raise ValueError("truncated chunk")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"bad CRC in chunk {kind!r}")
        out.append((kind, body))
        pos += 12 + length
        if kind == b"IEND":
            return out
    raise ValueError("no IEND chunk")


def unfilter(raw, h, stride, channels):
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f > 4:
            raise ValueError(f"bad filter type {f}")
        for i in range(stride if f else 0):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                pred = a
            elif f == 2:
                pred = b
            elif f == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return rows


def decode(data):
    """(channels, height, width, rows as a list of bytes)."""
    parts = chunks(data)
    if parts[0][0] != b"IHDR":
        raise ValueError("first chunk is not IHDR")
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", parts[0][1])
    if depth != 8 or interlace or ctype not in CHANNELS:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {ctype}, interlace {interlace}")
    channels = CHANNELS[ctype]
    raw = zlib.decompress(b"".join(body for kind, body in parts if kind == b"IDAT"))
    stride = w * channels
    if len(raw) != h * (stride + 1):
        raise ValueError(f"IDAT holds {len(raw)} bytes, want {h * (stride + 1)}")
    return channels, h, w, unfilter(raw, h, stride, channels)


def encode(rows, w, h, channels=1):
    """8-bit PNG bytes from h rows of w * channels interleaved values."""
    ctype = {v: k for k, v in CHANNELS.items()}[channels]
    raw = b"".join(b"\x00" + bytes(r) for r in rows)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
