"""Crafted image bytes shared by the API and serving tests."""

from __future__ import annotations

import struct
import zlib


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size, with almost no data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, *, before_idat: bytes = b"", mode: str = "rgb8") -> bytes:
    """A valid PNG of one flat colour (tiny when compressed), with chunks spliced in before IDAT.

    mode: "rgb8" (8-bit RGB), "rgba8" (8-bit RGBA: blended on white after decoding), "rgba16"
    (16-bit RGBA: 8 bytes a pixel to inflate and unfilter) or "grey16" (16-bit greyscale: scaled
    to 8 bits after decoding).
    """
    depth, colour, pixel = {
        "rgb8": (8, 2, 3),
        "rgba8": (8, 6, 4),
        "rgba16": (16, 6, 8),
        "grey16": (16, 0, 2),
    }[mode]
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * (width * pixel)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + before_idat
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def png_with_many_chunks(total_bytes: int, kind: bytes = b"tEXt") -> bytes:
    """A 64x64 PNG padded to about `total_bytes` with tiny chunks (a Python loop each)."""
    one = _png_chunk(kind, b"k\x00v") if kind == b"tEXt" else _png_chunk(kind, b"")
    return png(64, 64, before_idat=one * (total_bytes // len(one)))


def png_with_repeated_iccp(total_bytes: int) -> bytes:
    """A PNG whose iCCP chunk, each inflating to 1 MB from ~1 KB, is repeated up to the size."""
    profile = b"p\x00\x00" + zlib.compress(b"\x00" * (1 << 20), 9)
    one = _png_chunk(b"iCCP", profile)
    return png(64, 64, before_idat=one * (total_bytes // len(one)))


def png_with_ztxt_bomb(total_bytes: int) -> bytes:
    """A PNG with compressed text chunks, each inflating to 1 MB, up to the size."""
    one = _png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"a" * (1 << 20), 9))
    return png(64, 64, before_idat=one * (total_bytes // len(one)))


def png_with_exif_bomb() -> bytes:
    """A PNG whose eXIf chunk holds 65535 entries, each pointing at the whole block as its data."""
    count = 65535
    entries_end = 8 + 2 + count * 12 + 4
    size = entries_end + 1024
    body = bytearray(b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", count))
    for tag in range(count):
        # type 7 (UNDEFINED), `size - 8` bytes at offset 8: every entry reads most of the block.
        body += struct.pack(">HHII", 0x0100 + tag % 0xFE00, 7, size - 8, 8)
    body += b"\x00" * (size - len(body))
    return png(64, 64, before_idat=_png_chunk(b"eXIf", bytes(body)))


def progressive_jpeg_with_repeated_scan(size: int = 4000, repeats: int = 2000) -> bytes:
    """A progressive JPEG whose last scan is repeated: each repeat costs a pass over the image.

    The issue's reproduction: 4000x4000 with 2000 repeats is ~156 KB and ~12 s of decoding.
    """
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (120, 80, 40)).save(
        buffer, format="JPEG", progressive=True, quality=75
    )
    data = buffer.getvalue()
    last_scan = data.rindex(b"\xff\xda")
    scan = data[last_scan:-2]  # up to the EOI marker
    return data[:last_scan] + scan * repeats + b"\xff\xd9"


def gif_with_many_extensions(total_bytes: int) -> bytes:
    """A 16x16 GIF with comments of one-byte sub-blocks before its image, up to the size."""
    header = b"GIF89a" + struct.pack("<HHBBB", 16, 16, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    comment = b"\x21\xfe" + b"\x01x" * 64 + b"\x00"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 16, 16, 0) + b"\x02\x02\x4c\x01\x00"
    return header + comment * (total_bytes // len(comment)) + image + b"\x3b"


def bmp_rle8_single_pixel_runs(width: int = 4000, height: int = 2500) -> bytes:
    """An RLE8 BMP made of runs of one pixel: two bytes a pixel, each a Python loop in Pillow."""
    row = b"\x01\x05" * width + b"\x00\x00"  # one pixel of colour 5, ..., end of line
    pixels = row * height + b"\x00\x01"  # end of bitmap
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 0, 0, 256, 0)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels
