"""What a session keeps of a picture it sent: a small preview, never the upload itself.

One Streamlit process holds every open page (up to FRONTEND_CONCURRENCY of them). Kept as sent,
an upload costs its session its bytes (up to the 10 MB limit) and, each time `st.image` draws
it, a full decode (a 36-megapixel photo is ~110 MB of pixels) and a resized copy: measured,
~26 MiB per session that had classified a large photo, so a few dozen visitors with camera
photos took the instance over its memory. So the page shows, and keeps, a JPEG of at most
PREVIEW_SIDE pixels a side (tens of KB), made once, right after the image was sent:
- JPEGs are decoded at reduced size (libjpeg's DCT scaling, Pillow's `draft`): a 36 MP photo
  decodes at 1/8 scale, 0.6 MP;
- other formats have no reduced decode, so at most PREVIEWS_AT_ONCE of them decode at once in
  the process, and none over 12 MP (a larger PNG is classified, shown without a preview).
"""

from __future__ import annotations

import io
import struct
import threading
import zlib

from PIL import Image, ImageOps

from runtime.limits import MAX_IMAGE_PIXELS

PREVIEW_SIDE = 640  # wider than the page's image column; the compare view shows 240
# Formats with no reduced decode hold the whole image, twice for alpha (a 36 MP PNG with
# alpha: 287 MiB at its peak); above 12 MP (~100 MiB at most) such a picture gets no preview.
MAX_FULL_DECODE_PIXELS = 12_000_000
PREVIEWS_AT_ONCE = 1  # a 36 MP PNG decodes to 108-144 MB: one at a time in the page's 1 GiB
_DECODING = threading.BoundedSemaphore(PREVIEWS_AT_ONCE)
# The formats the backend accepts (backend/imaging.py): nothing else is handed to a decoder.
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")
# Pillow's decoders share no base exception class (backend/imaging.py lists why each); on any of
# them there is no preview, and the backend says what is wrong with the file.
_UNREADABLE = (
    Warning, OSError, SyntaxError, ValueError, TypeError, EOFError, IndexError, KeyError,
    struct.error, zlib.error, ZeroDivisionError, Image.DecompressionBombError,
)  # fmt: skip


def preview(data: bytes) -> bytes | None:
    """A JPEG of `data` at most PREVIEW_SIDE a side, or None if it cannot be read here."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            pixels = image.width * image.height
            # (Phone photos with a depth map or a second picture open as MPO, a JPEG too.)
            reduced = image.format in ("JPEG", "MPO")
            if pixels > (MAX_IMAGE_PIXELS if reduced else MAX_FULL_DECODE_PIXELS):
                return None
            with _DECODING:
                # Reduced first (a JPEG decodes at reduced size), then turned upright: the full
                # size is never copied.
                image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
            small = ImageOps.exif_transpose(image)
            if small.mode != "RGB":
                rgba = small.convert("RGBA")
                small = Image.new("RGB", rgba.size, "white")
                small.paste(rgba, mask=rgba.getchannel("A"))
            out = io.BytesIO()
            small.save(out, "JPEG", quality=85)
            return out.getvalue()
    except _UNREADABLE:
        return None
