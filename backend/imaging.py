"""Image intake: untrusted bytes in, an RGB PIL image ready for torchvision transforms out.

Pillow does the decoding; this module decides what it may decode and how much of it. Everything
that can go wrong comes out as a `backend.errors` type:

- empty input -> `BadRequest` (400)
- a format off the allow-list, or not an image at all (text, HTML, SVG, PDF, TIFF, PSD, EPS,
  FITS...) -> `UnsupportedMedia` (415). Only the allowed plugins are even tried, so Pillow never
  parses an EPS (which would hand it to Ghostscript) or a TIFF.
- more pixels than the policy allows -> `PayloadTooLarge` (413), decided from the header before
  the pixel data is allocated (a decompression bomb is an error here, never a warning)
- truncated or corrupt pixel data, or a shape no classifier can use -> `UndecodableImage` (422)
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from backend.errors import BadRequest, PayloadTooLarge, UndecodableImage, UnsupportedMedia

DEFAULT_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP"})

# Pillow's decoders share no base exception class. OSError is the usual one ("image file is
# truncated"), but plugins also raise SyntaxError on bad headers, ValueError/TypeError on bad
# parameters, EOFError/IndexError/KeyError/struct.error on short or inconsistent tables,
# zlib.error on broken compressed streams and ZeroDivisionError on zero-sized tiles; Pillow's
# warnings ("Corrupt EXIF data"...) arrive as exceptions when warnings are errors.
# Listing them, rather than catching Exception, keeps real bugs (NameError...) visible.
_DECODER_ERRORS = (
    Warning,
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    EOFError,
    IndexError,
    KeyError,
    struct.error,
    zlib.error,
    ZeroDivisionError,
)

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})

# Magic numbers of things people upload instead of a supported image, only to name them in the
# 415 message; they are never handed to a decoder.
_KNOWN_NON_IMAGES = (
    (b"%PDF", "a PDF document"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"8BPS", "a Photoshop (PSD) file"),
    (b"%!PS", "a PostScript/EPS file"),
    (b"\xc5\xd0\xd3\xc6", "an EPS file"),
    (b"SIMPLE  =", "a FITS file"),
)


@dataclass(frozen=True)
class ImagePolicy:
    """What `decode_image` accepts.

    max_pixels: 36 M pixels covers 6000x6000 and 24-MP camera photos while keeping one decoded
    RGB image near 110 MB. Pillow's own bomb check (2 x `Image.MAX_IMAGE_PIXELS`, 179 M by
    default) still applies above that, so raising max_pixels past it has no effect.
    max_aspect_ratio: torchvision's Resize(256) scales the short side to 256, so a 1x10000 strip
    would become 256x2,560,000 pixels (several GB as float tensors); such strips are refused.
    """

    allowed_formats: frozenset[str] = DEFAULT_FORMATS
    max_pixels: int = 36_000_000
    max_aspect_ratio: float = 50.0

    def __post_init__(self) -> None:
        Image.init()
        unknown = sorted(set(self.allowed_formats) - set(Image.OPEN))
        if not self.allowed_formats or unknown:
            raise ValueError(f"allowed_formats must name Pillow formats; unknown: {unknown}")
        if self.max_pixels < 1:
            raise ValueError("max_pixels must be at least 1")
        if self.max_aspect_ratio < 1:
            raise ValueError("max_aspect_ratio must be at least 1")


def decode_image(data: bytes, policy: ImagePolicy) -> Image.Image:
    """Return the first frame of `data` as an upright RGB image, transparency on white."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadRequest("the image must be sent as bytes")
    if len(data) == 0:
        raise BadRequest("the image is empty")
    image = _open_header(bytes(data), policy)
    _check_dimensions(image.size, policy)
    try:
        # load() is where truncated data shows: a cut JPEG passes Image.verify().
        image.load()
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge("the image has too many pixels") from exc
    except _DECODER_ERRORS as exc:
        raise UndecodableImage("the image data is truncated or corrupt") from exc
    _apply_exif_orientation(image)
    try:
        return _to_rgb(image)
    except _DECODER_ERRORS as exc:
        raise UndecodableImage(f"cannot convert a {image.mode} image to RGB") from exc


def is_image_content_type(content_type: str | None) -> bool:
    """Tell whether an upstream Content-Type may hold an image worth downloading.

    Only a first filter, to refuse an HTML page before reading it: image/* (except SVG, which is
    XML text), octet-stream and a missing header pass, and `decode_image` decides from the bytes.
    """
    if content_type is None:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in {"", "application/octet-stream", "binary/octet-stream"}:
        return True
    major, _, minor = media_type.partition("/")
    return major == "image" and minor != "svg+xml"


def _open_header(data: bytes, policy: ImagePolicy) -> Image.Image:
    """Return the lazily opened image: only its header has been parsed."""
    try:
        return Image.open(io.BytesIO(data), formats=sorted(policy.allowed_formats))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning arrives as an exception when warnings are errors (python -W error).
        raise PayloadTooLarge("the image has too many pixels") from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedMedia(_describe_unsupported(data, policy)) from exc
    except _DECODER_ERRORS as exc:
        raise UndecodableImage("the image header is corrupt") from exc


def _describe_unsupported(data: bytes, policy: ImagePolicy) -> str:
    allowed = ", ".join(sorted(policy.allowed_formats))
    head = data[:512].lstrip().lower()
    what = next((name for magic, name in _KNOWN_NON_IMAGES if data.startswith(magic)), None)
    if what is None and head.startswith(b"<"):
        what = "an SVG image" if b"<svg" in head else "HTML/XML text"
    if what is None:
        what = "not an image in a supported format"
    return f"the upload is {what}; supported formats: {allowed}"


def _check_dimensions(size: tuple[int, int], policy: ImagePolicy) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise UndecodableImage(f"the image has no pixels ({width}x{height})")
    if width * height > policy.max_pixels:
        raise PayloadTooLarge(
            f"the image is {width}x{height} pixels; the limit is {policy.max_pixels:,} pixels"
        )
    if max(width, height) / min(width, height) > policy.max_aspect_ratio:
        raise UndecodableImage(
            f"the image is {width}x{height}; the longer side may be at most "
            f"{policy.max_aspect_ratio:g} times the shorter"
        )


def _apply_exif_orientation(image: Image.Image) -> None:
    """Rotate `image` in place so it is upright, as the camera's EXIF tag says."""
    try:
        # in_place: the default returns a copy even when nothing needs rotating.
        ImageOps.exif_transpose(image, in_place=True)
    except _DECODER_ERRORS:
        # A corrupt EXIF block should not cost the user their picture: classify it as stored.
        return


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _scale_to_8_bit(image)
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba)  # alpha blend over white
        return background
    if image.mode == "RGB":
        return image
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr...


def _scale_to_8_bit(image: Image.Image) -> Image.Image:
    """Return a greyscale "L" image scaled from 16 bits (or any wider range) into 0..255.

    A plain convert("L") clips every value above 255, turning most 16-bit images white.
    """
    wide = image if image.mode in {"I", "F"} else image.convert("I")
    low, high = wide.getextrema()
    if low >= 0 and high <= 65535:
        scale, offset = 255 / 65535, 0.0  # a 16-bit sample: keep its brightness
    else:
        # Wider or signed data has no fixed range: stretch what is there.
        span = (high - low) or 1
        scale, offset = 255 / span, -low * 255 / span
    scaled = wide.point(lambda value: value * scale + offset).convert("L")
    # A 16-bit transparent colour key means nothing once the samples are rescaled.
    scaled.info.pop("transparency", None)
    return scaled
