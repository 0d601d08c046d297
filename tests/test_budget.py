"""The bound on decoded pixels in flight (backend/budget.py), alone and behind the routes."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from backend.app import create_app
from backend.budget import PixelBudget
from backend.errors import Busy, ShuttingDown
from backend.settings import Settings
from backend.stopping import ANSWER_MARGIN_S, StopSignal
from runtime.settings import SessionSettings


def test_reservations_within_the_budget_do_not_wait():
    budget = PixelBudget(100, wait_s=0)
    with budget.claim() as first, budget.claim() as second:
        first.reserve(60)
        second.reserve(40)
        assert budget.free == 0
    assert budget.free == 100


def test_a_reservation_over_what_is_free_waits_until_it_fits():
    budget = PixelBudget(100, wait_s=5)
    admitted = threading.Event()
    with budget.claim() as holder:
        holder.reserve(80)

        def second():
            with budget.claim() as claim:
                claim.reserve(50)
                admitted.set()
                return claim.waited_ms

        with ThreadPoolExecutor(1) as pool:
            waited = pool.submit(second)
            assert not admitted.wait(0.3)  # 80 + 50 > 100: it waits
            holder.release()
            assert waited.result(5) >= 250
    assert budget.free == 100


def test_a_request_that_cannot_get_room_in_time_is_busy_with_retry_after():
    budget = PixelBudget(100, wait_s=0.2)
    with budget.claim() as holder:
        holder.reserve(100)
        with budget.claim() as claim, pytest.raises(Busy) as refused:
            claim.reserve(1)
    assert refused.value.status == 503 and refused.value.retry_after_s >= 1
    assert budget.free == 100  # the refused claim holds nothing


def test_a_wait_at_the_stop_ends_by_the_stops_answer_by_with_503_shutting_down():
    """SIGTERM while a request waits for room: it is answered before the graceful stop ends
    (its own 10 s wait would outlast it), as a 503 that says to retry elsewhere."""
    stop = StopSignal()
    budget = PixelBudget(100, wait_s=10, stop_signal=stop)
    with budget.claim() as holder:
        holder.reserve(100)
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiter = pool.submit(lambda: budget.claim().__enter__().reserve(1))
            time.sleep(0.2)
            assert not waiter.done()
            stopped = time.monotonic()
            stop.stop(graceful_s=ANSWER_MARGIN_S + 0.3)  # waits end 0.3 s from now
            with pytest.raises(ShuttingDown) as refused:
                waiter.result(5)
            ended = time.monotonic() - stopped
    assert 0.2 < ended < 1.0, ended
    assert refused.value.status == 503 and refused.value.code == "shutting_down"
    assert refused.value.retry_after_s >= 1


def test_an_image_larger_than_the_budget_still_runs_alone():
    budget = PixelBudget(100, wait_s=0)
    with budget.claim() as claim:
        claim.reserve(10_000)
        assert budget.free == 0
    assert budget.free == 100


def test_waiters_are_admitted_in_arrival_order():
    """A large image is not overtaken by the small ones that arrive after it."""
    budget = PixelBudget(100, wait_s=5)
    order: list[str] = []

    def take(name: str, pixels: int) -> None:
        with budget.claim() as claim:
            claim.reserve(pixels)
            order.append(name)

    with budget.claim() as holder:
        holder.reserve(60)
        with ThreadPoolExecutor(2) as pool:
            large = pool.submit(take, "large", 100)
            time.sleep(0.1)  # the large one is queued first
            small = pool.submit(take, "small", 10)  # would fit now, but queues behind it
            time.sleep(0.2)
            assert order == []
            holder.release()
            large.result(5), small.result(5)
    assert order == ["large", "small"]


# --- behind the routes ---------------------------------------------------------------------


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 80, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def _app(bundles_dir, **overrides):
    settings = Settings(
        bundles_dir=bundles_dir,
        models="resnet18",
        session=SessionSettings(threads=2),
        **overrides,
    )
    return create_app(settings)


def test_requests_beyond_the_budget_wait_and_are_all_answered(bundles_dir):
    # Room for one 1500x1500 image at a time: eight at once decode one after the other.
    app = _app(bundles_dir, decode_budget_pixels=1500 * 1500, decode_wait_s=30)
    data = _png(1500, 1500)

    def send(_):
        with app.test_client() as client:
            response = client.post("/predict", data={"image": (io.BytesIO(data), "big.png")})
            return response.status_code, response.get_json()["timings_ms"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    assert [status for status, _ in answers] == [200] * 8
    assert any("budget_wait" in timings for _, timings in answers)  # some had to wait
    assert app.extensions["baked_vision"].pixel_budget.free == 1500 * 1500


def test_a_request_with_no_room_in_time_gets_503_with_retry_after(bundles_dir):
    app = _app(bundles_dir, decode_budget_pixels=1000, decode_wait_s=0.2)
    budget = app.extensions["baked_vision"].pixel_budget
    with budget.claim() as held:
        held.reserve(1000)  # another request holds the whole budget
        response = app.test_client().post(
            "/predict", data={"image": (io.BytesIO(_png(64, 64)), "small.png")}
        )
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "busy"
    assert "retry" in response.get_json()["error"]["message"]
    assert int(response.headers["Retry-After"]) >= 1
    assert budget.free == 1000


def test_pngs_whose_exif_follows_their_pixels_are_all_served_not_stuck_on_each_other(bundles_dir):
    """Each reserves its rotation up front: had they reserved it once the EXIF was read, two
    of them would each hold half the budget and wait on the other's half until 503."""
    from benchmarks.decode_memory import exif_after_image_data

    exif = Image.Exif()
    exif[0x0112] = 6
    data = exif_after_image_data(_png(1000, 1000), exif.tobytes().removeprefix(b"Exif\x00\x00"))
    app = _app(bundles_dir, decode_budget_pixels=3_000_000, decode_wait_s=3)
    client = app.test_client
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(
            pool.map(
                lambda _: (
                    client()
                    .post("/predict", data={"image": (io.BytesIO(data), "late.png")})
                    .status_code
                ),
                range(4),
            )
        )
    assert statuses == [200] * 4


def test_an_undecodable_image_gives_its_pixels_back(bundles_dir):
    app = _app(bundles_dir, decode_budget_pixels=10_000_000, decode_wait_s=1)
    data = _png(2000, 2000)
    response = app.test_client().post(
        "/predict", data={"image": (io.BytesIO(data[: len(data) // 2]), "cut.png")}
    )
    assert response.status_code == 422
    assert app.extensions["baked_vision"].pixel_budget.free == 10_000_000


def test_settings_read_the_budget_from_the_environment(tmp_path):
    settings = Settings.from_env(
        {"BUNDLES_DIR": str(tmp_path), "DECODE_BUDGET_PIXELS": "5000000", "DECODE_WAIT_S": "2.5"}
    )
    assert (settings.decode_budget_pixels, settings.decode_wait_s) == (5_000_000, 2.5)
