"""What the browser tests share: a stand-in backend with realistic answers, viewports, and the
check that an element is on screen without the user scrolling."""

from __future__ import annotations

from dataclasses import dataclass

from tests.frontend_servers import ScriptedServer, json_reply

SCREENSHOTS = "docs/screenshots"  # under the repository root; shown in README.md


@dataclass(frozen=True)
class Screen:
    name: str
    width: int
    height: int
    mobile: bool


PHONE = Screen("phone", 390, 844, mobile=True)
DESKTOP = Screen("desktop", 1280, 800, mobile=False)

CAT = [
    ("tabby", 0.612),
    ("tiger cat", 0.204),
    ("Egyptian cat", 0.118),
    ("lynx", 0.031),
    ("Persian cat", 0.004),
]
VGG16 = [
    ("tiger cat", 0.48),
    ("tabby", 0.31),
    ("lynx", 0.09),
    ("Egyptian cat", 0.05),
    ("cougar", 0.01),
]
MODELS = {"resnet152": CAT, "vgg16": VGG16}
META = {"architecture": "resnet152", "parameters": 60192808, "imagenet_acc1": 82.284}


def answer(model: str, labels=CAT) -> dict:
    predictions = [{"label": lb, "index": i, "probability": p} for i, (lb, p) in enumerate(labels)]
    return {"model": model, "category": labels[0][0], "predictions": predictions,
            "timings_ms": {"total": 184.0}}  # fmt: skip


def stand_in(models: dict = MODELS) -> ScriptedServer:
    """A backend serving `models` (ImageNet-like metadata, 1,000 classes), answering a cat."""
    script = {("GET", "/models"): json_reply(list(models))}
    for model, labels in models.items():
        meta = {**META, "id": model, "num_classes": 1000, "untrained": False}
        script[("GET", f"/models/{model}")] = json_reply(meta)
        script[("POST", f"/model/{model}/predict")] = json_reply(answer(model, labels))
    return ScriptedServer(script)


def new_page(browser, screen: Screen):
    context = browser.new_context(
        viewport={"width": screen.width, "height": screen.height},
        device_scale_factor=1,  # small screenshots in git
        is_mobile=screen.mobile,
        has_touch=screen.mobile,
    )
    return context.new_page()


def in_view(page, selector: str) -> tuple[bool, dict]:
    """Whether the element is wholly inside the viewport as it is now, and its box."""
    box = page.locator(selector).first.evaluate(
        "e => { const r = e.getBoundingClientRect();"
        " return {top: r.top, bottom: r.bottom, left: r.left, right: r.right,"
        " height: innerHeight, width: innerWidth}; }"
    )
    inside = box["top"] >= 0 and box["bottom"] <= box["height"] and box["right"] <= box["width"]
    return inside, box
