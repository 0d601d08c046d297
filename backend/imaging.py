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
- a JPEG with more scans than real encoders write, or any image whose decoding would take more
  than the policy's CPU budget -> `UndecodableImage` (422), see "Work" below

Work. The pixel limit bounds memory, not CPU: a 156 KB progressive JPEG whose last scan is
repeated 2000 times costs a pass over every coefficient per scan (~12 s of one core), and a PNG
of a million tiny chunks, or its ICC profile chunk repeated, costs one Python loop (or one 1 MB
inflate) each. So every decode runs inside a budget of CPU time of its own thread
(`max_decode_cpu_s`): Pillow reads its input through `_BudgetedInput`, which checks the
thread's CPU clock at every read (Pillow parses chunk by chunk and feeds its decoders 4 KB at a
time here), and the steps after loading are checked too. Before that, cheap checks refuse what
is costly by construction: JPEGs with more than `max_jpeg_scans` scans (counted on the bytes,
before any decoding: libjpeg has a scan limit, Pillow does not expose it) and EXIF blocks larger
than a JPEG can carry (64 KB; larger ones are ignored, as corrupt EXIF is). Every image is
decoded at full size, as torchvision's `Image.open(...).convert("RGB")` does: libjpeg's reduced
decode (Pillow's `draft`) would save memory, which the pixel budget bounds anyway
(backend/budget.py), but it changes the answer — measured on 8 large JPEGs with random-valued
weights, resnet152's top-1 differed in 2 and probabilities by up to 9e-3 (benchmarks/RESULTS.md)
— and it saves little CPU (a 6000x4500 progressive JPEG: 0.26 s reduced, 0.39 s in full).
Animated GIF/WebP: only the first frame is ever decoded. Pillow's own limits stay in force:
`ImageFile.LOAD_TRUNCATED_IMAGES` off (a truncated image is a 422), PNG text chunks bounded by
`PngImagePlugin.MAX_TEXT_CHUNK` (1 MB each) and `MAX_TEXT_MEMORY` (64 MB in all).
"""

from __future__ import annotations

import io
import re
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from backend.errors import BadRequest, PayloadTooLarge, UndecodableImage, UnsupportedMedia
from runtime.limits import MAX_IMAGE_PIXELS

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

# Pillow reads and decodes this much compressed input between two checks of the budget
# (its default, 64 KB, can hold hundreds of cheap-to-send, costly-to-decode JPEG scans).
_DECODE_BLOCK = 4096
# The most EXIF a JPEG can carry (one APP1 segment); a larger block (PNG eXIf, WebP EXIF) is not
# a camera's, and parsing its 65535 entries would cost most of a second.
_MAX_EXIF_BYTES = 65535
_EXIF_ORIENTATION = 0x0112
# What rotating and converting a loaded image to RGB costs at most, per pixel (alpha blending on
# white, measured here: ~0.4 s for 36 M pixels), reserved from the budget before they start.
_FINISH_CPU_S_PER_PIXEL = 12e-9
# A JPEG marker: 0xFF and a byte that is not a stuffed zero, a restart marker or a fill byte.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_SOS = 0xDA
# Marker segments walked before decoding: a crafted 10 MB JPEG of 4-byte segments made this
# Python loop cost ~0.7 s of CPU; real files have tens (progressive ones under a hundred).
_MAX_JPEG_SEGMENTS = 4096
_JPEG_EOI = 0xD9

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
    max_jpeg_scans: libjpeg's progressive mode writes 10 scans for colour (2 + 4 per component
    otherwise, 18 for CMYK); 32 leaves room for other encoders' scan scripts.
    max_decode_cpu_s: CPU seconds of the request's thread that decoding may take. The largest
    legitimate inputs measured here (a 36 MP, 10 MB progressive photo) take ~0.5 s; with the
    last step's overrun, the worst input found stays under 1 s (docs/bad-inputs.md).
    """

    allowed_formats: frozenset[str] = DEFAULT_FORMATS
    max_pixels: int = MAX_IMAGE_PIXELS
    max_aspect_ratio: float = 50.0
    max_jpeg_scans: int = 32
    max_decode_cpu_s: float = 0.8

    def __post_init__(self) -> None:
        Image.init()
        unknown = sorted(set(self.allowed_formats) - set(Image.OPEN))
        if not self.allowed_formats or unknown:
            raise ValueError(f"allowed_formats must name Pillow formats; unknown: {unknown}")
        if self.max_pixels < 1:
            raise ValueError("max_pixels must be at least 1")
        if self.max_aspect_ratio < 1:
            raise ValueError("max_aspect_ratio must be at least 1")
        if self.max_jpeg_scans < 1 or self.max_decode_cpu_s <= 0:
            raise ValueError("max_jpeg_scans and max_decode_cpu_s must be positive")


def decode_image(
    data: bytes, policy: ImagePolicy, reserve: Callable[[int], None] | None = None
) -> Image.Image:
    """Return the first frame of `data` as an upright RGB image, transparency on white.

    `reserve(pixels)`, if given, is called with the pixels about to be held, once the header is
    checked and before any pixel is allocated: the RGB pixels' worth of memory its decode path
    holds at its peak (`_pixels_to_reserve`, measured: 1x the pixels for a plain RGB JPEG, 5x
    for any WebP). The caller's bound on the pixels in flight (backend.budget) may wait there.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadRequest("the image must be sent as bytes")
    if len(data) == 0:
        raise BadRequest("the image is empty")
    data = bytes(data)
    budget = _Budget(policy.max_decode_cpu_s)
    if data.startswith(b"\xff\xd8"):
        _check_jpeg_scans(data, policy.max_jpeg_scans)
    image = _open_header(_BudgetedInput(data, budget), policy)
    _check_dimensions(image.size, policy)
    image.decodermaxblock = _DECODE_BLOCK
    if reserve is not None:
        reserve(_pixels_to_reserve(image, _may_have_late_exif(image, data)))
    try:
        # load() is where truncated data shows: a cut JPEG passes Image.verify().
        image.load()
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge("the image has too many pixels") from exc
    except _DECODER_ERRORS as exc:
        raise UndecodableImage("the image data is truncated or corrupt") from exc
    # The steps below are not interruptible: refuse now if they cannot finish within the budget.
    converts = image.mode != "RGB" or image.has_transparency_data
    budget.check(reserve=image.width * image.height * _FINISH_CPU_S_PER_PIXEL * converts)
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


class _Budget:
    """CPU time the current thread may still spend decoding; `check` raises when it is spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends_at = time.thread_time() + seconds

    def check(self, reserve: float = 0.0) -> None:
        """Raise unless `reserve` more seconds still fit in the budget."""
        if time.thread_time() + reserve > self._ends_at:
            raise UndecodableImage(
                f"the image takes more than {self.seconds:g} s of CPU to decode (too many "
                "chunks, scans or pixels for its size); send a smaller or simpler image, "
                "e.g. a baseline JPEG or PNG of at most 4000x4000 pixels"
            )


class _BudgetedInput(io.BytesIO):
    """The image's bytes as Pillow reads them, with the budget checked at every read.

    Pillow's parsers (PNG chunks, GIF blocks, BMP RLE runs, ...) and its decoders' input
    loop all read through here, so any of them that runs too long stops at its next read.
    """

    def __init__(self, data: bytes, budget: _Budget) -> None:
        super().__init__(data)
        self._budget = budget

    def read(self, size: int | None = -1, /) -> bytes:
        self._budget.check()
        return super().read(size)

    def read1(self, size: int | None = -1, /) -> bytes:
        self._budget.check()
        return super().read1(size)

    def readline(self, size: int | None = -1, /) -> bytes:
        self._budget.check()
        return super().readline(size)

    def readinto(self, buffer, /) -> int:
        self._budget.check()
        return super().readinto(buffer)


def _check_jpeg_scans(data: bytes, max_scans: int) -> None:
    """Refuse a JPEG with more than `max_scans` scans (SOS markers), before decoding it.

    Walks the marker segments by their lengths and skips each scan's entropy-coded data to the
    next marker with one regular-expression search (C speed: ~10 ms for 10 MB). Anything this
    walk cannot follow is left to the decoder, which refuses it as corrupt.
    """
    scans, segments, position, end = 0, 0, 2, len(data)
    while position + 4 <= end:
        segments += 1
        if segments > _MAX_JPEG_SEGMENTS:
            raise UndecodableImage(
                f"the JPEG has more than {_MAX_JPEG_SEGMENTS} marker segments (cameras write "
                "a few dozen); re-save it as a plain JPEG"
            )
        if data[position] != 0xFF:
            return  # not at a marker: corrupt, the decoder says so
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker == _JPEG_EOI:
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        position += 2 + length
        if marker == _JPEG_SOS:
            scans += 1
            if scans > max_scans:
                raise UndecodableImage(
                    f"the JPEG has more than {max_scans} scans (real encoders write at most "
                    "about 20); it would take minutes to decode. Re-save it as a baseline JPEG"
                )
            found = _JPEG_MARKER.search(data, position)
            if found is None:
                return
            position = found.start()


def _open_header(source: io.BytesIO, policy: ImagePolicy) -> Image.Image:
    """Return the lazily opened image: only its header has been parsed."""
    try:
        return Image.open(source, formats=sorted(policy.allowed_formats))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning arrives as an exception when warnings are errors (python -W error).
        raise PayloadTooLarge("the image has too many pixels") from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedMedia(_describe_unsupported(source.getvalue()[:512], policy)) from exc
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


# Peak bytes per pixel while an image is decoded and made RGB, by decode path, measured by
# benchmarks/decode_memory.py (docs/bad-inputs.md has the table) and rounded up. The budget
# (backend/budget.py) counts in RGB pixels, which Pillow holds in 4 bytes each.
_BUDGET_UNIT_BYTES = 4
_PEAK_BYTES_PER_PIXEL = {
    "WEBP": 20,  # libwebp's own buffer, Pillow's copy, then RGB: 16.8 lossy, 19.1 lossless
    "RGB": 4,  # the decode is the result: 4.2 (a JPEG's working rows on top)
    "RGBA": 8,  # blended onto a new RGB image: 8.0
    "1": 6,  # the 1-byte decode, then RGB: 5.0 (BMP)
    "L": 6,  # 5.2 (greyscale JPEG)
    "P": 9,  # 9.0 (GIF, PNG)
    "CMYK": 9,  # 8.1 (CMYK JPEG)
    "transparent": 12,  # LA, P or L with transparency, through RGBA: 9.0-12.0
    "16-bit": 12,  # through a 4-byte mode, then L, then RGB: 11.0
    "other": 12,  # YCbCr, LAB...: the most of the above that is not WebP
}
_ROTATION_BYTES_PER_PIXEL = 4  # exif_transpose writes a rotated copy: +4.0


def _may_have_late_exif(image: Image.Image, data: bytes) -> bool:
    """Whether a PNG may carry EXIF (an orientation) after its pixels, where its header does not
    show it. Reserving for it only once it is read would make two such requests each hold half
    the budget and wait for the other's half; a chunk name anywhere in the bytes is enough to
    reserve up front (compressed data that happens to hold it only costs a larger reservation)."""
    return image.format == "PNG" and "exif" not in image.info and b"eXIf" in data


def _pixels_to_reserve(image: Image.Image, late_exif: bool = False) -> int:
    """The budget's RGB pixels that decoding `image` holds at its peak, from its header."""
    if image.format == "WEBP":
        peak = _PEAK_BYTES_PER_PIXEL["WEBP"]
    elif image.has_transparency_data and image.mode != "RGBA":
        peak = _PEAK_BYTES_PER_PIXEL["transparent"]
    elif image.mode in _SIXTEEN_BIT_MODES:
        peak = _PEAK_BYTES_PER_PIXEL["16-bit"]
    else:
        peak = _PEAK_BYTES_PER_PIXEL.get(image.mode, _PEAK_BYTES_PER_PIXEL["other"])
    if late_exif or _needs_rotation(image):
        peak += _ROTATION_BYTES_PER_PIXEL
    return -(-image.width * image.height * peak // _BUDGET_UNIT_BYTES)


def _needs_rotation(image: Image.Image) -> bool:
    exif = image.info.get("exif")
    if not isinstance(exif, bytes | bytearray) or len(exif) > _MAX_EXIF_BYTES:
        return False  # none, or none a camera wrote (see _MAX_EXIF_BYTES): not rotated
    try:
        return image.getexif().get(_EXIF_ORIENTATION, 1) != 1
    except _DECODER_ERRORS:
        return False  # corrupt: _apply_exif_orientation ignores it too


def _apply_exif_orientation(image: Image.Image) -> None:
    """Rotate `image` in place so it is upright, as the camera's EXIF tag says."""
    exif = image.info.get("exif")
    if isinstance(exif, bytes | bytearray) and len(exif) > _MAX_EXIF_BYTES:
        return  # no camera wrote it (see _MAX_EXIF_BYTES): classify the image as stored
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
        # An RGBA image is its own mask: a converted copy would hold a third full buffer.
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
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
