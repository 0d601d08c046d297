"""Peak memory of each decode path, in bytes per pixel: what backend/imaging.py reserves.

    uv run python benchmarks/decode_memory.py [--megapixels 4]

Each input is decoded by `backend.imaging.decode_image` (the serving code, with its CPU budget
lifted) in a fresh process; the figure is the process's peak resident memory (VmHWM, reset
through /proc/self/clear_refs just before) minus its resident memory then, over the image's
pixels. Decoding is linear in the pixels, so a few megapixels give the figure of 36.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _exif_rotated() -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    return exif.tobytes()


def exif_after_image_data(png: bytes, exif: bytes) -> bytes:
    """`png` with an eXIf chunk just before IEND: after the pixels, where a header cannot see it."""
    import struct
    import zlib

    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + exif))
    end = png.rindex(b"IEND") - 4
    return png[:end] + chunk + png[end:]


def as_ycck(cmyk_jpeg: bytes) -> bytes:
    """The CMYK JPEG's four planes read as YCCK (the Adobe marker's transform 2), as Photoshop
    writes CMYK: libjpeg then converts YCC to CMY row by row before Pillow sees the pixels."""
    adobe = cmyk_jpeg.index(b"\xff\xee\x00\x0eAdobe")
    transform = adobe + 4 + 11  # marker, length, "Adobe", version, two flag words
    return cmyk_jpeg[:transform] + b"\x02" + cmyk_jpeg[transform + 1 :]


def inputs(side: int) -> dict[str, bytes]:
    """One image per decode path, `side` x `side` pixels, with real (noisy) content."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), "RGB")
    alpha = Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8), "L")
    rgba = rgb.copy()
    rgba.putalpha(alpha)

    def save(image, fmt: str, **kwargs) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **kwargs)
        return buffer.getvalue()

    palette = rgb.quantize(256)
    palette.info["transparency"] = 0
    grey16 = Image.fromarray(rng.integers(0, 65536, (side, side), dtype=np.uint16))
    rotated = _exif_rotated()
    return {
        "JPEG RGB": save(rgb, "JPEG", quality=90),
        "JPEG RGB, EXIF rotated": save(rgb, "JPEG", quality=90, exif=rotated),
        "JPEG greyscale": save(rgb.convert("L"), "JPEG"),
        "JPEG CMYK": save(rgb.convert("CMYK"), "JPEG"),
        "JPEG YCCK": as_ycck(save(rgb.convert("CMYK"), "JPEG")),
        "PNG RGB": save(rgb, "PNG", compress_level=1),
        "PNG RGB, EXIF rotated": save(rgb, "PNG", compress_level=1, exif=rotated),
        "PNG RGB, EXIF after the pixels": exif_after_image_data(
            save(rgb, "PNG", compress_level=1), rotated.removeprefix(b"Exif\x00\x00")
        ),
        "PNG RGBA": save(rgba, "PNG", compress_level=1),
        "PNG LA": save(rgba.convert("LA"), "PNG", compress_level=1),
        "PNG palette + transparency": save(palette, "PNG", transparency=0),
        "PNG 16-bit greyscale": save(grey16, "PNG", compress_level=1),
        "WebP lossy": save(rgb, "WEBP", quality=80),
        "WebP lossless": save(rgb, "WEBP", lossless=True, method=0),
        "WebP RGBA": save(rgba, "WEBP", quality=80),
        "GIF": save(palette, "GIF"),
        "GIF animated": save(palette, "GIF", save_all=True, append_images=[palette] * 2),
        "BMP 1-bit": save(rgb.convert("1"), "BMP"),
    }


_MEASURE = """
import re, sys
sys.path.insert(0, {root!r})
from backend.imaging import ImagePolicy, decode_image
from backend.process import allocator_for_serving
allocator_for_serving()  # as the serving process does
data = open(sys.argv[1], "rb").read()
policy = ImagePolicy(max_decode_cpu_s=1e9)
def status(key):
    text = open("/proc/self/status").read()
    return int(re.search(key + r":\\s+(\\d+) kB", text).group(1)) * 1024
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM
before = status("VmRSS")
image = decode_image(data, policy)
print(status("VmHWM") - before, image.width * image.height)
"""


def measure(path: Path) -> float:
    """Peak bytes per pixel of decoding the image in `path`, in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE.format(root=str(ROOT)), str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    peak, pixels = (int(v) for v in out.stdout.split())
    return peak / pixels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megapixels", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    side = int((args.megapixels * 1e6) ** 0.5)
    work = ROOT / ".local" / "decode-memory"
    work.mkdir(parents=True, exist_ok=True)
    figures = {}
    for name, data in inputs(side).items():
        path = work / (name.replace(" ", "_").replace(",", "") + ".img")
        path.write_bytes(data)
        figures[name] = round(measure(path), 1)
        print(f"{name:30s} {len(data) / 1e6:7.2f} MB  {figures[name]:5.1f} bytes/pixel")
    if args.out:
        args.out.write_text(json.dumps({"side": side, "bytes_per_pixel": figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
