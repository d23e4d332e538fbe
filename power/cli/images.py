"""Image paths in a prompt, as ``ollama run`` reads them for vision models.

``a3s-power run llava "what is in ./photo.png?"`` sends the file as an image and
the rest as the prompt. A path starts with ``/``, ``./``, ``../`` or ``~/`` (or a
Windows drive), may hold backslash-escaped spaces or sit in quotes, and ends in
.jpg, .jpeg, .png, .webp, .gif or .bmp. A path that names no readable file stays
in the prompt as text.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import TextIO

__all__ = ["MAX_IMAGE_BYTES", "extract_images"]

MAX_IMAGE_BYTES = 100 * 1024 * 1024
_EXT = r"\.(?:jpe?g|png|webp|gif|bmp)"
_PATH = re.compile(
    r"""(?P<q>['"])(?P<quoted>(?:[A-Za-z]:)?(?:~|\.{1,2})?[/\\][^'"\n]*?""" + _EXT + r""")(?P=q)"""
    r"""|(?P<bare>(?:[A-Za-z]:)?(?:~|\.{1,2})?[/\\](?:\\\ |[^\s'"])*?""" + _EXT + r""")(?![\w.])""",
    re.IGNORECASE)


def extract_images(prompt: str, *, err: TextIO | None = None) -> tuple[str, list[str]]:
    """The prompt without the image paths it names, and those images as base64, in order."""
    images: list[str] = []

    def take(m: re.Match[str]) -> str:
        raw = m.group("quoted") or m.group("bare").replace("\\ ", " ")
        path = Path(os.path.expanduser(raw))
        try:
            if not path.is_file() or path.stat().st_size > MAX_IMAGE_BYTES:
                return m.group(0)
            data = path.read_bytes()
        except OSError:
            return m.group(0)
        images.append(base64.b64encode(data).decode("ascii"))
        if err is not None:
            err.write(f"Added image '{raw}'\n")
        return ""

    text = _PATH.sub(take, prompt)
    if not images:
        return prompt, images
    return re.sub(r"[ \t]{2,}", " ", text).strip(), images
