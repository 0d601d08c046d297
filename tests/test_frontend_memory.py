"""A session keeps only what the page shows: a bounded preview, never the upload itself."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frontend.inputs import MAX_UPLOAD_BYTES
from frontend.preview import PREVIEW_SIDE, preview
from runtime.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from tests.frontend_page import classify_upload, open_page, reset_page, shown_model
from tests.test_frontend_page import stub_backend


def _photo(size: tuple[int, int], fmt: str = "JPEG", mode: str = "RGB", **save) -> bytes:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (size[1] // 16, size[0] // 16, len(mode)), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(), mode).resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("size", "fmt"), [((6000, 4000), "JPEG"), ((3000, 4000), "PNG"), ((800, 300), "WEBP")]
)
def test_the_preview_is_a_small_jpeg_whatever_was_sent(size, fmt):
    shown = preview(_photo(size, fmt))
    with Image.open(io.BytesIO(shown)) as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        assert max(image.size) == min(PREVIEW_SIDE, max(size))
        # The shape is kept: the longer side is the one that was longer.
        assert (image.width >= image.height) == (size[0] >= size[1])
    assert len(shown) < 200_000


def test_transparency_is_shown_on_white_and_the_camera_orientation_applied():
    rgba = Image.new("RGBA", (300, 100), (0, 0, 0, 0))
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: the picture is 100 wide and 300 high as the camera saw it
    rgba.save(buffer, "PNG", exif=exif)
    with Image.open(io.BytesIO(preview(buffer.getvalue()))) as image:
        assert image.size == (100, 300)
        assert image.getpixel((50, 150)) == pytest.approx((255, 255, 255), abs=2)


def test_what_the_page_cannot_read_or_the_backend_would_refuse_has_no_preview():
    assert preview(b"just text") is None
    assert preview(_photo((400, 400))[:200]) is None  # a cut header
    # A header that claims more pixels than the backend accepts: never decoded here.
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    big = io.BytesIO()
    Image.new("L", (side, side)).save(big, "JPEG")
    assert preview(big.getvalue()) is None
    # A format with no reduced decode, over 12 MP: it would hold the whole picture to preview it.
    wide = io.BytesIO()
    Image.new("RGBA", (4000, 3001)).save(wide, "PNG")
    assert preview(wide.getvalue()) is None


def test_the_pages_upload_limit_is_the_backends():
    assert MAX_UPLOAD_BYTES == MAX_IMAGE_BYTES


def test_after_an_upload_the_session_keeps_a_preview_not_the_file(monkeypatch):
    reset_page(monkeypatch)
    sent = _photo((6000, 4000), quality=95)
    assert len(sent) > 1_000_000
    with stub_backend() as backend:
        monkeypatch.setenv("SERVING_URL", backend.url)
        at = classify_upload(open_page(), "big.jpg", sent, "image/jpeg")
        (request,) = [r for r in backend.requests if r.method == "POST"]
    assert not at.exception
    assert sent in request.body  # the backend got the whole file
    assert shown_model(at) == "resnet152"
    kept = at.session_state["outcome"].image
    assert kept != sent and len(kept) < 200_000
    with Image.open(io.BytesIO(kept)) as image:
        assert max(image.size) == PREVIEW_SIDE
    # The uploader came back empty under a new key: Streamlit lets the file's bytes go.
    assert at.session_state["upload_generation"] == 1
    (uploader,) = at.get("file_uploader")
    assert uploader.key == "upload_1" and uploader.value is None


def test_the_page_process_returns_large_freed_blocks_to_the_system(tmp_path):
    """glibc's mmap threshold is fixed in the Streamlit process (frontend/__main__.py)."""
    from frontend.__main__ import MMAP_THRESHOLD_BYTES
    from tests.frontend_process import start_frontend

    process = start_frontend(tmp_path / "frontend.log", SERVING_URL="http://127.0.0.1:9")
    try:
        process.wait_healthy()
        environ = Path(f"/proc/{process.process.pid}/environ").read_bytes().split(b"\0")
        cmdline = Path(f"/proc/{process.process.pid}/cmdline").read_bytes()
    finally:
        process.stop()
    assert b"streamlit" in cmdline  # the same process, after the exec
    assert f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD_BYTES}".encode() in environ


def test_a_large_phone_photo_with_a_second_picture_gets_its_preview():
    """Pillow opens such JPEGs as MPO; they decode at reduced size like any JPEG."""
    buffer = io.BytesIO()
    second = Image.new("RGB", (5000, 3000), "blue")
    Image.new("RGB", (5000, 3000), "red").save(buffer, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    with Image.open(io.BytesIO(preview(buffer.getvalue()))) as shown:
        assert shown.size == (PREVIEW_SIDE, 384)
