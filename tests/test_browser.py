"""End to end in a real browser: Debian's chromium, the real frontend process, the real backend.

Each test saves a full-page screenshot in its pytest tmp dir and prints where; with
$FRONTEND_SCREENSHOTS set, a copy goes there too (CI keeps them).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from backend import errors
from frontend.examples import EXAMPLES
from tests.backend_process import ROOT
from tests.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.frontend_browser import DESKTOP, PHONE, SCREENSHOTS, in_view, new_page, stand_in
from tests.frontend_browser import MODELS as STAND_IN_MODELS
from tests.frontend_process import start_frontend
from tests.frontend_servers import Reply, ScriptedServer, error_reply, image_server, json_reply

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
        open_tab(page, "Image URL")
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
    expect(page.locator("img").nth(0)).to_be_visible()
    page.get_by_role("button", name=example.title, exact=True).click()

    for model, answer in expected.items():
        result = page.locator(f".st-key-result_{model}")
        expect(result).to_be_visible(timeout=60_000)
        expect(result.get_by_text(answer["predictions"][0]["label"]).first).to_be_visible()
        expect(result.get_by_text("on the backend")).to_be_visible()
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
            page.get_by_role("button", name=EXAMPLES[1].title, exact=True).click()

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


@pytest.mark.parametrize("screen", [PHONE, DESKTOP], ids=lambda s: s.name)
def test_after_tapping_an_example_the_answer_is_in_view_without_scrolling(
    browser, tmp_path, screen
):
    """The top answer (class, probability) on screen: beside the image on a desktop, under it
    on a phone. Its screenshot is the README's (docs/screenshots/page-<screen>.png)."""
    from playwright.sync_api import expect

    with stand_in() as backend:
        process = start_frontend(tmp_path / "frontend.log", SERVING_URL=backend.url)
        try:
            process.wait_healthy()
            page = new_page(browser, screen)
            page.goto(process.url)
            expect(page.get_by_text("one of 1,000 ImageNet categories")).to_be_visible(
                timeout=30_000
            )
            page.get_by_role("button", name=EXAMPLES[0].title, exact=True).click()
            top = page.locator(".st-key-top_answer")
            expect(top.get_by_text("tabby").first).to_be_visible(timeout=30_000)
            expect(top.get_by_text("61.2% probability")).to_be_visible()
            page.wait_for_timeout(1_000)  # the answer's smooth scroll, if any, ends
            shot = save_screenshot(page, tmp_path, f"page-{screen.name}", full_page=False)
            inside, box = in_view(page, ".st-key-top_answer")
            assert inside, f"the answer is at {box} on a {screen.width}x{screen.height} screen"
            image, image_box = in_view(page, "img[alt='The image that was classified']")
            assert image, f"the image is at {image_box}: not on screen beside or above the answer"
            shutil.copy(shot, ROOT / SCREENSHOTS)  # what the README shows, kept current
            page.context.close()
        finally:
            process.stop()


def test_a_copied_link_opened_in_a_fresh_browser_shows_the_same_view(browser, tmp_path):
    from playwright.sync_api import expect

    with stand_in() as backend, image_server() as images:
        process = start_frontend(tmp_path / "frontend.log", SERVING_URL=backend.url)
        try:
            process.wait_healthy()
            image_url = f"{images.url}/cat.jpg"
            page = new_page(browser, DESKTOP)
            page.goto(process.url)
            page.get_by_role("combobox", name="Model").click()
            page.get_by_role("option", name="vgg16").click()
            open_tab(page, "Image URL")
            page.get_by_role("textbox", name="Image URL").fill(image_url)
            page.get_by_role("button", name="Classify", exact=True).click()
            expect(page.get_by_text("Model: vgg16")).to_be_visible(timeout=30_000)
            copied = page.url
            page.context.close()

            fresh = new_page(browser, DESKTOP)  # a new context: no cookies, no session
            fresh.goto(copied)
            expect(fresh.get_by_text("Model: vgg16")).to_be_visible(timeout=30_000)
            expect(
                fresh.locator(".st-key-top_answer").get_by_text("tiger cat").first
            ).to_be_visible()
            image = fresh.locator("img[alt='The image that was classified']")
            expect(image).to_have_attribute("src", image_url)
            expect(fresh.get_by_role("combobox", name="Model")).to_have_value("vgg16")
            fresh.context.close()
        finally:
            process.stop()
    predicted = [r.path for r in backend.requests if r.method == "POST"]
    assert predicted == ["/model/vgg16/predict"] * 2  # once per browser, the chosen model


DEFAULT = next(iter(STAND_IN_MODELS))  # what a request without a pick goes to

# Every answer the backend can give instead of a prediction: each contract error code, the
# errors Werkzeug and Cloud Run's front end answer with, and a timeout.
CONTRACT_ERRORS = sorted(
    {(cls.status, cls.code) for cls in vars(errors).values()
     if isinstance(cls, type) and issubclass(cls, errors.ApiError)}
    | {(404, "not_found"), (405, "method_not_allowed"), (413, "payload_too_large")}
)  # fmt: skip
OTHER_ANSWERS = {
    "html_502": Reply(502, b"<html><body>502 Bad Gateway</body></html>", "text/html"),
    "html_403": Reply(403, b"<html><body>Error: Forbidden</body></html>", "text/html"),
    "html_404": Reply(404, b"<html><body>Not Found</body></html>", "text/html"),
    "html_429": Reply(429, b"Rate exceeded.", "text/plain"),
    "not_json": Reply(200, b"<html>a login page</html>", "text/html"),
    "slow": json_reply({}, delay_s=3),
}


def test_no_technical_text_on_the_surface_for_any_backend_error(browser, tmp_path):
    from playwright.sync_api import expect

    replies = {
        code: error_reply(status, code, f"TECHNICAL-{code}: detail for the logs")
        for status, code in CONTRACT_ERRORS
    } | OTHER_ANSWERS
    with stand_in() as backend:
        process = start_frontend(
            tmp_path / "frontend.log", SERVING_URL=backend.url, BACKEND_TIMEOUT_S="1"
        )
        try:
            process.wait_healthy()
            page = new_page(browser, PHONE)
            page.goto(process.url)
            surfaces = {}
            predict = ("POST", f"/model/{DEFAULT}/predict")
            answered = backend.script[predict]
            error = page.locator("[data-testid='stAlertContentError']")
            for name, reply in replies.items():
                # An answer first, so the error counted next is this reply's, not the last one's.
                backend.script[predict] = answered
                page.get_by_role("button", name=EXAMPLES[1].title, exact=True).click()
                expect(page.locator(".st-key-top_answer")).to_be_visible(timeout=30_000)
                expect(error).to_have_count(0)
                backend.script[predict] = reply
                page.get_by_role("button", name=EXAMPLES[0].title, exact=True).click()
                expect(error).to_have_count(1, timeout=30_000)
                expect(page.locator("[data-testid='stExpander']")).to_have_count(1)
                surfaces[name] = error.inner_text()
                main = page.locator("[data-testid='stMain']").inner_text()
                # (a code as an identifier: "busy" is also a plain word, and said as one)
                code = name if "_" in name else "TECHNICAL-"
                for technical in ("TECHNICAL-", "HTTP", "<html", "Traceback", code, "code "):
                    assert technical not in main, f"{name}: {technical!r} on the page:\n{main}"
                # The detail is one tap away.
                page.locator("[data-testid='stExpander'] summary").click()
                expect(page.locator("[data-testid='stExpander'] code")).to_be_visible()
                page.locator("[data-testid='stExpander'] summary").click()
            save_screenshot(page, tmp_path, "error-phone", full_page=False)
            page.context.close()
        finally:
            process.stop()
    print("\n".join(f"{name}: {text}" for name, text in surfaces.items()))
    assert all(text.strip() for text in surfaces.values())


def open_tab(page, name: str) -> None:
    """Click a tab once the rerun a click started is over: until then Streamlit keeps the
    previous run's elements on the page beside the new ones (two tabs of each name)."""
    from playwright.sync_api import expect

    tab = page.get_by_role("tab", name=name)
    expect(tab).to_have_count(1, timeout=30_000)
    tab.click()


def save_screenshot(page, directory: Path, name: str, *, full_page: bool = True) -> Path:
    """A screenshot in `directory` (and $FRONTEND_SCREENSHOTS); prints its path."""
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
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
