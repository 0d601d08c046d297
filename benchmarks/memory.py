"""Memory under the worst load a deployed backend admits (issue: memory under load).

    uv run python -m benchmarks --only memory

The worst requests are the largest images every limit admits, one per decode path
(WORST_KINDS): 36 M pixels (MAX_IMAGE_PIXELS) each, under the upload limit; the JPEG is both the
largest body and a full decode, the WebPs hold the most copies. Every request thread of the
instance sends one kind at once (BACKEND_THREADS, as deployed), twice over, and the worker's
peak resident memory (VmHWM: the kernel's own high-water mark, no sampling to miss a spike) is
read after. Per request: (peak - settled) / requests in flight. The container tests
(tests/test_containers.py) run the same load against each deployed service at its limit.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from benchmarks import deployed as deployed_sizes
from benchmarks.decode_memory import as_ycck, exif_after_image_data
from benchmarks.harness import (
    BACKEND,
    first_prediction,
    launch,
    model_files_mib,
    rss_mb,
)
from runtime.limits import MAX_IMAGE_BYTES

# The deployed sizes (deployment/spec.py), where the container tests and __main__ look them up.
deployed = deployed_sizes.deployed

# Browser sessions this 2-core machine drives at once (each uploading 10 MB) without timing out.
BROWSER_SESSIONS = 8
# The backend's pixel limit (backend/settings.py), as a square.
SIDE = 6000
WORST_BYTES = MAX_IMAGE_BYTES - 64 * 1024  # just under the limit, with room to spare


# The worst inputs of each decode path (docs/bad-inputs.md, "Memory of a decode"), 36 M pixels
# each and each under the upload limit: the largest body (a photo-like JPEG), the most copies
# of all (WebP: libwebp's canvases, Pillow's copy, RGB; lossless in 1.4 KB, lossy), CMYK and
# YCCK JPEGs (4 bytes a pixel, then RGB), a PNG whose EXIF rotation follows its pixels (where
# its header cannot show it), grey with alpha rotated (through RGBA, blended, rotated), 16-bit
# (through 32-bit integers), greyscale JPEG, GIF and 1-bit BMP (a 1-byte decode, then RGB).
WORST_KINDS = (
    "jpeg",
    "webp-lossless",
    "webp-lossy",
    "jpeg-cmyk",
    "jpeg-ycck",
    "png-exif-late",
    "png-alpha-rotated",
    "png-16bit",
    "jpeg-grey",
    "gif",
    "bmp-1bit",
)


def worst_images(directory: Path, kinds: tuple[str, ...] = WORST_KINDS) -> dict[str, bytes]:
    """The worst image of each kind, generated once (deterministically) and kept in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    images = {}
    try:
        for kind in kinds:
            path = directory / f"worst-{SIDE}-{kind}.{kind.split('-')[0]}"
            if not path.exists():
                data = _encode(kind)
                if len(data) > WORST_BYTES:
                    raise RuntimeError(f"the {kind} image is {len(data)} bytes, over the limit")
                path.write_bytes(data)
            images[kind] = path.read_bytes()
    finally:
        _scene_cache.clear()
    return images


_scene_cache: dict[str, np.ndarray] = {}


def _base() -> np.ndarray:
    """A photo-like 6000x6000 picture without grain: gradients and shapes with edges (float)."""
    if "base" not in _scene_cache:
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) / SIDE
        base = np.stack([x * 200 + 30, y * 180 + 40, (1 - x) * 120 + y * 80], axis=-1)
        for _ in range(40):  # shapes with edges, so the compressed size is not a gradient's
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.02, 0.15)
            base[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
        _scene_cache["base"] = base
    return _scene_cache["base"]


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _encode(kind: str) -> bytes:
    flat = lambda: Image.fromarray(_base().astype(np.uint8), "RGB")  # noqa: E731
    rotated = Image.Exif()
    rotated[0x0112] = 6  # rotated 90 degrees: one more full-size copy
    if kind == "png-alpha-rotated":  # grey with alpha: the most copies of any PNG
        return _save(Image.new("LA", (SIDE, SIDE), (120, 200)), "PNG", exif=rotated)
    if kind == "png-exif-late":
        png = _save(flat(), "PNG", compress_level=6)
        return exif_after_image_data(png, rotated.tobytes().removeprefix(b"Exif\x00\x00"))
    if kind == "png-16bit":
        grey = (_base().mean(axis=2) * 257).astype(np.uint16)
        return _save(Image.fromarray(grey), "PNG", compress_level=6)
    if kind == "webp-lossless":  # one colour: 1.4 KB on the wire, 36 M pixels decoded
        return _save(Image.new("RGB", (SIDE, SIDE), (120, 160, 200)), "WEBP", lossless=True)
    if kind == "webp-lossy":
        # Grain 4: 2.5 MB, decoded in ~0.5 s of CPU. The JPEG's grain (12) gives 8.8 MB, which
        # takes 0.8-1.0 s to decode and is refused for CPU (422), after the same peak of pixels.
        return _save(_photo(4.0), "WEBP", quality=80, method=0)
    if kind == "gif":
        return _save(flat().quantize(256, dither=Image.Dither.NONE), "GIF")
    if kind == "bmp-1bit":
        return _save(flat().convert("1"), "BMP")
    # JPEGs: grain sized so the file is just under the upload limit.
    mode, grain = {"jpeg": ("RGB", 12.0), "jpeg-grey": ("L", 8.0)}.get(kind, ("CMYK", 2.5))
    for _ in range(12):
        data = _save(_photo(grain).convert(mode), "JPEG", quality=85)
        if 0.8 * WORST_BYTES < len(data) <= WORST_BYTES:
            return as_ycck(data) if kind == "jpeg-ycck" else data
        grain *= 0.8 if len(data) > WORST_BYTES else 1.25
    raise RuntimeError(f"could not encode a {kind} of {SIDE}x{SIDE} under {WORST_BYTES} bytes")


def _photo(grain: float) -> Image.Image:
    """The base picture with a camera's grain (deterministic for a given grain)."""
    rng = np.random.default_rng(int(grain * 1000))
    noisy = _base() + rng.normal(0, grain, (SIDE, SIDE, 1)).astype(np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def _post(url: str, model: str, data: bytes, kind: str) -> str:
    """The answer's status, with the error code of a 503 (e.g. "503 busy") and "422 cpu" for
    a decode refused for its CPU time."""
    fmt = kind.split("-")[0]
    response = requests.post(
        f"{url}/predict",
        files={"image": (f"worst.{fmt}", data, f"image/{fmt}")},
        data={"model": model},
        timeout=120,
    )
    if response.status_code == 503:
        return f"503 {response.json()['error']['code']}"
    if response.status_code == 422 and "of CPU" in response.json()["error"]["message"]:
        return "422 cpu"  # refused by the decode's CPU budget (backend/imaging.py)
    return str(response.status_code)


def load(url: str, ids: list[str], data: bytes, kind: str, threads: int, rounds: int) -> dict:
    """Every thread sends `data`, `rounds` times; give the statuses and the wall time."""
    models = [ids[n % len(ids)] for n in range(threads * rounds)]
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        statuses = list(pool.map(lambda m: _post(url, m, data, kind), models))
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return {"statuses": counts, "seconds": time.perf_counter() - started}


def backend(
    bundles_dir: Path,
    ids: list[str],
    images: dict[str, bytes],
    work: Path,
    *,
    threads: int,
    env: dict[str, str] | None = None,
) -> dict:
    """One backend per image kind, as deployed: its settled memory, then its peak under load."""
    out = {"threads": threads, "model_files_mib": model_files_mib(bundles_dir, ids), "kinds": {}}
    for kind, data in images.items():
        target = launch(
            BACKEND,
            {
                "BUNDLES_DIR": str(bundles_dir),
                "MODELS": ",".join(ids),
                "ALLOW_UNTRAINED_WEIGHTS": "1",
                "REQUEST_THREADS": str(threads),
                **(env or {}),
            },
            work / f"memory-{kind}.log",
        )
        try:
            first_prediction(target, data, ids[0])
            for model_id in ids[1:]:
                _post(target.url, model_id, data, kind)
            worker = target.worker_pid()
            settled = rss_mb(worker)["VmRSS"]
            result = load(target.url, ids, data, kind, threads, rounds=2)
            peak = rss_mb(worker)["VmHWM"]
            out["kinds"][kind] = {
                "bytes": len(data),
                "settled_mib": settled,
                "peak_mib": peak,
                "per_request_mib": (peak - settled) / threads,
                **result,
            }
        finally:
            target.stop()
    return out


def print_backend(name: str, figures: dict) -> None:
    print(f"\nmemory under load, backend {name} ({figures['threads']} requests at once):")
    print("| image | settled | peak | per request in flight | statuses | seconds |")
    print("|---|---|---|---|---|---|")
    for kind, f in figures["kinds"].items():
        print(
            f"| {kind} {f['bytes'] / 1e6:.1f} MB | {f['settled_mib']:.0f} MiB "
            f"| {f['peak_mib']:.0f} MiB | {f['per_request_mib']:.0f} MiB "
            f"| {f['statuses']} | {f['seconds']:.1f} |"
        )


# --- the frontend -------------------------------------------------------------------------------

# One model, as v1's page: the answer any stand-in backend gives.
STAND_IN_MODEL = "resnet152"
_TOP = [("tabby", 0.5), ("tiger cat", 0.2), ("lynx", 0.1), ("Persian cat", 0.05), ("cat", 0.05)]
STAND_IN_ANSWER = {
    "model": STAND_IN_MODEL,
    "category": "tabby",
    "predictions": [{"label": t, "index": i, "probability": p} for i, (t, p) in enumerate(_TOP)],
    "timings_ms": {"total": 80.0},
}


def browser_sessions(
    page_url: str,
    waves: list[int],
    upload: Path,
    after_wave: Callable[[int], None],
    *,
    timeout_s: float = 180,
) -> int:
    """Waves of browser sessions in Debian's chromium: each session opens the page, uploads
    `upload` and classifies it, every upload of a wave before any answer is waited for; after
    each wave, `after_wave(sessions so far)`. Every page stays open (its session alive) to the
    end. Gives how many sessions got their answer on the page."""
    from playwright.sync_api import expect, sync_playwright

    from tests.chromium import CHROMIUM, CHROMIUM_ARGS

    wait_ms = timeout_s * 1000
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            answered = 0
            for size in waves:
                pages = []
                for _ in range(size):
                    page = browser.new_page(viewport={"width": 1000, "height": 1200})
                    page.goto(page_url)
                    heading = page.get_by_role("heading", name="Baked Vision")
                    expect(heading).to_be_visible(timeout=wait_ms)
                    pages.append(page)
                for page in pages:
                    page.get_by_role("tab", name="Upload").click()
                    # The page sends a file as soon as it is chosen: no button to click.
                    page.locator("input[type=file]").set_input_files(str(upload))
                for page in pages:
                    result = page.get_by_text(f"Model: {STAND_IN_MODEL}")
                    expect(result).to_be_visible(timeout=wait_ms)
                    answered += 1
                after_wave(answered)
            return answered
        finally:
            browser.close()


def stand_in_backend():
    """A backend on 127.0.0.1 that reads every upload and gives one fixed answer."""
    from tests.frontend_servers import ScriptedServer, json_reply

    meta = {"id": STAND_IN_MODEL, "architecture": STAND_IN_MODEL, "untrained": False}
    return ScriptedServer(
        {
            ("GET", "/models"): json_reply([STAND_IN_MODEL]),
            ("GET", f"/models/{STAND_IN_MODEL}"): json_reply(meta),
            ("POST", f"/model/{STAND_IN_MODEL}/predict"): json_reply(STAND_IN_ANSWER),
        }
    )


def frontend(
    images: dict[str, bytes],
    work: Path,
    *,
    sessions: int,
    deployed: int,
    env: dict[str, str] | None = None,
) -> dict:
    """The page's process with one session, then `sessions`, each having classified the
    largest upload; per session (the sessions after the first: the first also pays the page's
    imports), and extrapolated to `deployed` sessions (its concurrency)."""
    from tests.frontend_process import start_frontend

    upload = work / "worst.jpg"
    upload.write_bytes(images["jpeg"])
    seen: dict[int, dict[str, float]] = {}
    with stand_in_backend() as backend:
        backend.requests = _Discard()  # 10 MB per upload: keep none of them
        process = start_frontend(
            work / "frontend-memory.log", SERVING_URL=backend.url, **(env or {})
        )
        try:
            process.wait_healthy()
            idle = rss_mb(process.process.pid)["VmRSS"]
            answered = browser_sessions(
                process.url,
                [1, sessions - 1],
                upload,
                lambda count: seen.setdefault(count, rss_mb(process.process.pid)),
            )
        finally:
            process.stop()
    return summarise(
        idle, seen[1], seen[sessions], sessions, deployed, answered, len(upload.read_bytes())
    )


def summarise(
    idle: float, first: dict, last: dict, sessions: int, deployed: int, answered: int, size: int
) -> dict:
    per_session = (last["VmRSS"] - first["VmRSS"]) / (sessions - 1)
    return {
        "sessions": sessions,
        "answered": answered,
        "upload_bytes": size,
        "idle_mib": idle,
        "one_session_mib": first["VmRSS"],
        "after_mib": last["VmRSS"],
        "peak_mib": last["VmHWM"],
        "per_session_mib": per_session,
        "deployed_sessions": deployed,
        "extrapolated_mib": last["VmHWM"] + per_session * (deployed - sessions),
    }


class _Discard(list):
    """A request log that keeps nothing."""

    def append(self, item) -> None:
        pass


def print_frontend(figures: dict) -> None:
    f = figures
    print(
        f"\nmemory under load, frontend: {f['sessions']} browser sessions each classified a "
        f"{f['upload_bytes'] / 1e6:.1f} MB upload ({f['answered']} answered): idle "
        f"{f['idle_mib']:.0f} MiB, one session {f['one_session_mib']:.0f} MiB, all "
        f"{f['after_mib']:.0f} MiB, peak {f['peak_mib']:.0f} MiB; "
        f"{f['per_session_mib']:.1f} MiB per session -> {f['extrapolated_mib']:.0f} MiB at "
        f"{f['deployed_sessions']} sessions"
    )


# --- the reduced-size JPEG decode: does it keep the answer? -------------------------------------


def draft_effect(bundles_dir: Path, ids: list[str], smallest: tuple[int, ...]) -> dict:
    """The alternative not taken: large JPEGs decoded at reduced size (libjpeg's DCT scaling,
    Pillow's `draft`, to no less than each of `smallest` pixels on the short side) against the
    full decode the backend does, as torchvision's `Image.open(...).convert("RGB")`: per model,
    the worst probability difference, and whether the top-1 and the top-5 agree, on photo-like
    scenes of 2048 to 6000 pixels a side, baseline and progressive; and the decode's CPU time
    of the largest."""
    from runtime.bundle import Bundle
    from runtime.session import ModelSession, top_classes
    from runtime.settings import SessionSettings

    scenes = []
    for n, side in enumerate((2048, 3000, 4000, 6000)):
        for progressive in (False, True):
            buffer = io.BytesIO()
            _scene(side, side * 3 // 4, seed=n).save(
                buffer, "JPEG", quality=90, progressive=progressive
            )
            scenes.append(buffer.getvalue())

    def decode(data: bytes, short_side: int | None) -> Image.Image:
        image = Image.open(io.BytesIO(data))
        if short_side:
            image.draft("RGB", (short_side, short_side))
        return image.convert("RGB")

    out: dict = {"images": len(scenes), "decode_cpu_s": {}, "models": {}}
    for short_side in (None, *smallest):
        started = time.thread_time()
        decode(scenes[-1], short_side)  # 6000x4500, progressive
        out["decode_cpu_s"][str(short_side or "full")] = time.thread_time() - started
    for model_id in ids:
        session = ModelSession(Bundle.read(bundles_dir / model_id, fix="-"), SessionSettings())

        def probabilities(image: Image.Image, s=session) -> np.ndarray:
            return s.probabilities(s.preprocess([image]))[0]

        full = [probabilities(decode(data, None)) for data in scenes]
        out["models"][model_id] = {}
        for short_side in smallest:
            worst, top1, top5 = 0.0, 0, 0
            for data, p_full in zip(scenes, full, strict=True):
                p_reduced = probabilities(decode(data, short_side))
                worst = max(worst, float(np.abs(p_full - p_reduced).max()))
                best = [[i for i, _ in top_classes(p, 5)] for p in (p_full, p_reduced)]
                top1 += best[0][0] == best[1][0]
                top5 += best[0] == best[1]
            out["models"][model_id][str(short_side)] = {
                "worst_probability_difference": worst,
                "top1_agree": top1,
                "top5_agree": top5,
            }
    return out


def _scene(width: int, height: int, seed: int) -> Image.Image:
    """Smooth regions, edges and fine texture: what a photo has and a reduced decode can lose."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / height, x / width
    base = np.stack([x * 180 + 40, y * 160 + 50, (1 - x) * 120 + y * 90], axis=-1)
    for _ in range(30):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.2)
        base[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    stripes = 20 * np.sin(x * width / 3.0)[..., None]  # a 3-pixel texture, finer than 1024 px
    noisy = base + stripes + rng.normal(0, 6, base.shape).astype(np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def print_draft(figures: dict) -> None:
    print(
        f"\nlarge JPEGs decoded at reduced size against the full decode "
        f"({figures['images']} images):"
    )
    print(
        "| model | reduced to (short side) | worst probability difference "
        "| top-1 agrees | top-5 agrees |"
    )
    print("|---|---|---|---|---|")
    for model_id, sizes in figures["models"].items():
        for size, f in sizes.items():
            print(
                f"| {model_id} | >= {size} px | {f['worst_probability_difference']:.1e} "
                f"| {f['top1_agree']} | {f['top5_agree']} |"
            )
    cpu = ", ".join(f"{k}: {v:.2f} s" for k, v in figures["decode_cpu_s"].items())
    print(f"decode CPU of a 6000x4500 progressive JPEG: {cpu}")
