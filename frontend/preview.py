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
  the process, and none over the backend's pixel limit (the backend refuses those anyway).
"""

from __future__ import annotations

import io
import threading

from PIL import Image, ImageOps, UnidentifiedImageError

from runtime.limits import MAX_IMAGE_PIXELS

PREVIEW_SIDE = 640  # wider than the page's image column; the compare view shows 240
PREVIEWS_AT_ONCE = 1  # a 36 MP PNG decodes to 108-144 MB: one at a time in 512 MiB
_DECODING = threading.BoundedSemaphore(PREVIEWS_AT_ONCE)
# What Pillow may raise on a file it cannot read; the backend then says what is wrong with it.
_UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)


def preview(data: bytes) -> bytes | None:
    """A JPEG of `data` at most PREVIEW_SIDE a side, or None if it cannot be read here."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                return None
            image.draft("RGB", (PREVIEW_SIDE, PREVIEW_SIDE))  # JPEG only; a no-op otherwise
            with _DECODING:
                image.seek(0)
                small = ImageOps.exif_transpose(image)
                small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
            if small.mode != "RGB":
                rgba = small.convert("RGBA")
                small = Image.new("RGB", rgba.size, "white")
                small.paste(rgba, mask=rgba.getchannel("A"))
            out = io.BytesIO()
            small.save(out, "JPEG", quality=85)
            return out.getvalue()
    except (*_UNREADABLE, Image.DecompressionBombError):
        return None
