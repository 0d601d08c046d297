"""End to end in a real browser: Debian's chromium, the real frontend process, the real backend.

Each test saves a full-page screenshot in its pytest tmp dir and prints where; with
$FRONTEND_SCREENSHOTS set, a copy goes there too (CI keeps them).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from frontend.examples import EXAMPLES
from tests.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.frontend_process import start_frontend
from tests.frontend_servers import ScriptedServer, image_server, json_reply

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODELS = ["resnet18", "mobilenet_v3_large"]  # served by the backend_server fixture


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

        save_screenshot(page, tmp_path, "prediction")
        page.close()


def test_a_user_compares_every_model_on_an_example_photo(
    browser, frontend, backend_server, tmp_path
):
    from playwright.sync_api import expect

    example = EXAMPLES[0]
    expected = {
        model: requests.post(
            f"{backend_server.url}/model/{model}/predict",
            files={"image": (example.path.name, example.read(), "image/jpeg")},
            timeout=60,
        ).json()
        for model in MODELS
    }
    page = browser.new_page(viewport={"width": 1100, "height": 1400})
    page.goto(frontend.url)
    expect(page.get_by_role("heading", name="Baked Vision")).to_be_visible(timeout=30_000)

    page.get_by_text("Compare every model").click()
    expect(page.get_by_role("combobox", name="Model")).to_be_disabled()
    open_tab(page, "Examples")
    expect(page.locator("img").nth(0)).to_be_visible()
    page.get_by_role("button", name=example.title).click()

    for model, answer in expected.items():
        result = page.locator(f".st-key-result_{model}")
        expect(result).to_be_visible(timeout=60_000)
        expect(result.get_by_text(answer["predictions"][0]["label"]).first).to_be_visible()
        expect(result.get_by_text("on the backend")).to_be_visible()
    expect(page.get_by_text("The models' top classes side by side")).to_be_visible()
    expect(page.locator("canvas, svg.marks").first).to_be_visible()  # the compare chart
    save_screenshot(page, tmp_path, "compare-example")
    page.close()


def test_each_models_answer_shows_as_soon_as_it_arrives(browser, tmp_path):
    from playwright.sync_api import expect

    def answer(model: str, label: str) -> dict:
        prediction = {"label": label, "index": 0, "probability": 0.9}
        return {"model": model, "predictions": [prediction], "timings_ms": {"total": 5.0}}

    stand_in = ScriptedServer(
        {
            ("GET", "/models"): json_reply(["quick", "slow"]),
            ("POST", "/model/quick/predict"): json_reply(answer("quick", "tabby")),
            ("POST", "/model/slow/predict"): json_reply(answer("slow", "lynx"), delay_s=6),
        }
    )
    with stand_in as backend:
        process = start_frontend(tmp_path / "frontend.log", SERVING_URL=backend.url)
        try:
            process.wait_healthy()
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            page.goto(process.url)
            page.get_by_text("Compare every model").click()
            open_tab(page, "Examples")
            page.get_by_role("button", name=EXAMPLES[1].title).click()

            # The quick model's card is filled while the slow one is still being waited for.
            expect(page.locator(".st-key-result_quick")).to_be_visible(timeout=5_000)
            expect(page.locator(".st-key-waiting_slow")).to_be_visible()
            expect(page.locator(".st-key-result_slow")).to_have_count(0)
            save_screenshot(page, tmp_path, "compare-arriving")
            expect(page.locator(".st-key-result_slow")).to_be_visible(timeout=30_000)
            expect(page.locator(".st-key-result_slow").get_by_text("lynx")).to_be_visible()
            page.close()
        finally:
            process.stop()


def open_tab(page, name: str) -> None:
    """Click a tab once the rerun a click started is over: until then Streamlit keeps the
    previous run's elements on the page beside the new ones (two tabs of each name)."""
    from playwright.sync_api import expect

    tab = page.get_by_role("tab", name=name)
    expect(tab).to_have_count(1, timeout=30_000)
    tab.click()


def save_screenshot(page, directory: Path, name: str) -> Path:
    """A full-page screenshot in `directory` (and $FRONTEND_SCREENSHOTS); prints its path."""
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a page, not a blank
    print(f"screenshot: {path}")
    if artifacts := _artifact_dir():
        shutil.copy(path, artifacts / f"browser-{name}.png")
    return path


def _artifact_dir() -> Path | None:
    """Where CI (or a curious developer) asks for screenshots: $FRONTEND_SCREENSHOTS."""
    import os

    target = os.environ.get("FRONTEND_SCREENSHOTS")
    if not target:
        return None
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    return path
