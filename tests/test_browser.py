"""End to end in a real browser: Debian's chromium, the real frontend process, the real backend."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from tests.frontend_process import start_frontend
from tests.frontend_servers import image_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
# Playwright's own browser download does not work here; Debian's chromium, headless, with
# everything that would reach out to Google's services turned off.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/install-system-packages.sh`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def frontend(backend_server, tmp_path):
    process = start_frontend(tmp_path / "frontend.log", SERVING_URL=backend_server.url)
    try:
        process.wait_healthy()
        yield process
    finally:
        process.stop()


def test_a_user_classifies_an_image_url(browser, frontend, backend_server, tmp_path):
    from playwright.sync_api import expect

    with image_server() as images:
        image_url = f"{images.url}/cat.jpg"
        expected = requests.post(
            f"{backend_server.url}/predict",
            json={"url": image_url, "model": "mobilenet_v3_large"},
            timeout=60,
        ).json()

        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.goto(frontend.url)
        expect(page.get_by_role("heading", name="Baked Vision")).to_be_visible(timeout=30_000)

        # v2 (two models served): pick the second one, then ask about the image.
        page.get_by_role("combobox", name="Model").click()
        page.get_by_role("option", name="mobilenet_v3_large").click()
        page.get_by_role("textbox", name="Image URL").fill(image_url)
        page.get_by_role("button", name="Classify", exact=True).click()

        result = page.get_by_text("Model: mobilenet_v3_large")
        expect(result).to_be_visible(timeout=60_000)
        top = expected["predictions"][0]["label"]
        expect(page.get_by_text(top, exact=True).first).to_be_visible()
        expect(page.locator("img[alt='The image that was classified']")).to_be_visible()
        expect(page.locator("canvas, svg.marks").first).to_be_visible()  # the top-5 chart
        assert ("GET", "/cat.jpg") in [(r.method, r.path) for r in images.requests]

        screenshot = tmp_path / "prediction.png"
        page.screenshot(path=str(screenshot), full_page=True)
        page.close()
    assert screenshot.stat().st_size > 10_000
    if artifacts := _artifact_dir():
        shutil.copy(screenshot, artifacts / "browser-prediction.png")


def _artifact_dir() -> Path | None:
    """Where CI (or a curious developer) asks for screenshots: $FRONTEND_SCREENSHOTS."""
    import os

    target = os.environ.get("FRONTEND_SCREENSHOTS")
    if not target:
        return None
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    return path
