"""Image headers are read totally: a size or an InvalidRequest, never another exception."""

from __future__ import annotations

import base64
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from power.errors import InvalidRequest
from power.server.images import MAX_PIXELS, decode_images, image_size
from tests.tinymodels import png


def jpeg(w: int, h: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, h, w, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + b"\xff\xff" + sof + b"\xff\xda"


def webp_vp8x(w: int, h: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (w - 1).to_bytes(3, "little") + \
        (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def webp_vp8l(w: int, h: int) -> bytes:
    bits = (w - 1) | ((h - 1) << 14)
    body = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + struct.pack("<I", bits)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


@pytest.mark.parametrize("data, size", [
    (png(37, 5), (37, 5)),
    (jpeg(640, 480), (640, 480)),
    (b"GIF89a" + struct.pack("<HH", 12, 34) + b"\x00" * 4, (12, 34)),
    (b"BM" + b"\x00" * 12 + struct.pack("<Iii", 40, 300, -200) + b"\x00" * 8, (300, 200)),
    (webp_vp8x(4000, 3000), (4000, 3000)),
    (webp_vp8l(16, 9), (16, 9)),
])
def test_sizes_from_headers(data: bytes, size: tuple[int, int]) -> None:
    assert image_size(data) == size


def test_decompression_bombs_are_refused_before_decoding() -> None:
    side = int(MAX_PIXELS ** 0.5) + 10
    for data in (jpeg(side, side), webp_vp8x(20000, 10)):
        with pytest.raises(InvalidRequest, match="more than this server decodes"):
            decode_images([base64.b64encode(data).decode()])
    assert decode_images([base64.b64encode(png(3, 3)).decode()]) == [png(3, 3)]


@pytest.mark.parametrize("data, needle", [
    (b"hello", "not a PNG"), (b"\xff\xd8\xff\xda", "damaged"), (b"GIF89a\x01", "damaged"),
    (b"GIF89a" + b"\x00" * 10, "no pixels"),
])
def test_bad_headers(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        decode_images([base64.b64encode(data).decode()])


_PREFIXES = st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBP",
                             b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x00\x00\x00\x00WEBPVP8L", b"\xff\xd8\xff\xc0"])


@settings(max_examples=400, deadline=None)
@given(_PREFIXES, st.binary(max_size=64))
def test_header_reader_is_total(prefix: bytes, rest: bytes) -> None:
    try:
        w, h = image_size(prefix + rest)
    except InvalidRequest:
        return
    assert w >= 0 and h >= 0
