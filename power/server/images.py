"""Request images checked before they reach the runner: base64, a known format, a bounded size.

The runner decodes images with stb_image, which allocates width x height x 3
bytes up front: a small PNG can declare 50,000 x 50,000 pixels. The header is
read here (PNG, JPEG, GIF, BMP, WebP) and an image past ``MAX_PIXELS`` or
``MAX_SIDE`` is a 400 before any pixel is decoded. The header readers are
total: any input gives a size or an ``InvalidRequest``.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any, Iterable

from power.errors import InvalidRequest

__all__ = ["MAX_PIXELS", "MAX_SIDE", "decode_images", "image_size"]

MAX_SIDE = 16384
MAX_PIXELS = 100_000_000

_PNG = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless...); C4, C8 and CC are other segments.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _png(d: bytes) -> tuple[int, int] | None:
    if len(d) >= 24 and d[12:16] == b"IHDR":
        return struct.unpack(">II", d[16:24])
    return None


def _gif(d: bytes) -> tuple[int, int] | None:
    return struct.unpack("<HH", d[6:10]) if len(d) >= 10 else None


def _bmp(d: bytes) -> tuple[int, int] | None:
    if len(d) < 26:
        return None
    (header,) = struct.unpack("<I", d[14:18])
    if header == 12:
        return struct.unpack("<HH", d[18:22])
    w, h = struct.unpack("<ii", d[18:26])
    return abs(w), abs(h)


def _webp(d: bytes) -> tuple[int, int] | None:
    kind = d[12:16]
    if kind == b"VP8 " and len(d) >= 30 and d[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", d[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L" and len(d) >= 25 and d[20] == 0x2F:
        (bits,) = struct.unpack("<I", d[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X" and len(d) >= 30:
        return int.from_bytes(d[24:27], "little") + 1, int.from_bytes(d[27:30], "little") + 1
    return None


def _jpeg(d: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(d):
        if d[pos] != 0xFF:
            return None
        marker = d[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length
            pos += 2
            continue
        (length,) = struct.unpack(">H", d[pos + 2:pos + 4])
        if marker in _SOF:
            if pos + 9 > len(d):
                return None
            h, w = struct.unpack(">HH", d[pos + 5:pos + 9])
            return w, h
        if length < 2 or marker == 0xDA:  # image data before any frame header
            return None
        pos += 2 + length
    return None


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height from an image's header; ``InvalidRequest`` when it is not an image we take."""
    if data.startswith(_PNG):
        size = _png(data)
    elif data.startswith(b"\xff\xd8\xff"):
        size = _jpeg(data)
    elif data.startswith((b"GIF87a", b"GIF89a")):
        size = _gif(data)
    elif data.startswith(b"BM"):
        size = _bmp(data)
    elif len(data) >= 16 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        size = _webp(data)
    else:
        raise InvalidRequest("not a PNG, JPEG, WebP, GIF or BMP image")
    if size is None:
        raise InvalidRequest("the image header is damaged")
    return size


def decode_images(images: Iterable[Any]) -> list[bytes]:
    """Request images (base64 text) as bytes, each a known format of a size the runner may decode."""
    out = []
    for i, image in enumerate(images):
        if not isinstance(image, str):
            raise InvalidRequest(f"invalid image {i}: expected base64 text")
        try:
            data = base64.b64decode("".join(image.split()), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"invalid image {i}: not valid base64") from None
        try:
            w, h = image_size(data)
        except InvalidRequest as exc:
            raise InvalidRequest(f"invalid image {i}: {exc}") from None
        if not (w and h):
            raise InvalidRequest(f"invalid image {i}: it has no pixels")
        if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
            raise InvalidRequest(f"invalid image {i}: {w}x{h} pixels is more than this server decodes "
                                 f"(at most {MAX_SIDE} a side and {MAX_PIXELS // 1_000_000} megapixels)")
        out.append(data)
    return out
