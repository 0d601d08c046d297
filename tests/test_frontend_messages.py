"""Every backend error code in the user's words: a sentence, an action, the detail apart."""

from __future__ import annotations

import pytest

from backend import errors
from frontend.client import BackendFailed, BackendRejected, BackendTimeout, BackendUnavailable
from frontend.messages import BY_CODE, explain

CODES = sorted(
    cls.code
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.ApiError)
)


def test_every_code_the_backend_defines_has_its_own_words():
    assert set(CODES) <= set(BY_CODE), set(CODES) - set(BY_CODE)


@pytest.mark.parametrize("code", CODES)
def test_the_surface_is_plain_and_the_detail_keeps_the_backends_words(code):
    error = BackendRejected(f"{code} happened at line 3", status=400, code=code)
    plain = explain(error)
    assert plain.sentence.endswith(".") and plain.action.endswith(".")
    # (an identifier: "busy" is a plain word too, and said as one)
    assert ("_" not in code or code not in plain.text) and "HTTP" not in plain.text
    assert "line 3" not in plain.text
    assert plain.detail == f"HTTP 400, code {code}: {code} happened at line 3"


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (BackendTimeout("no answer within 60 s"), "took too long"),
        (BackendUnavailable("Cannot reach the backend at http://x"), "cannot be reached"),
        (BackendFailed("The backend's answer is not JSON."), "went wrong"),
    ],
)
def test_failures_without_a_code_are_plain_too(error, words):
    plain = explain(error)
    assert words in plain.text
    assert plain.detail == str(error)
