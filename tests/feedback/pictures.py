"""Small real images for the tests that send them: a PNG drawn with Pillow, and its data URL."""

from __future__ import annotations

import base64
import io

from PIL import Image


def png(width: int = 4, height: int = 3, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"
