"""Property-based tests (hypothesis) of the two parsers of untrusted input: a prediction
request's fields (backend/intake.py) and an image URL (backend/urlfetch.py's check).

Whatever comes in, each gives a well-formed result or one of the contract's typed 4xx errors,
never another exception (which the app would answer 500)."""

from __future__ import annotations

import io
import ipaddress

import pytest
from flask import Flask
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from backend.errors import ApiError, UrlNotAllowed
from backend.intake import parse_predict_request
from backend.urlfetch import FetchPolicy, _check_url, _Deadline

MAX_TOP_K = 20
MAX_IMAGE_BYTES = 4096
_app = Flask(__name__)
fast = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


def _parse(**request):
    with _app.test_request_context("/predict", method="POST", **request) as context:
        return parse_predict_request(
            context.request, max_top_k=MAX_TOP_K, max_image_bytes=MAX_IMAGE_BYTES
        )


def _check_parsed(parsed) -> None:
    assert (parsed.url is None) != (parsed.image is None)
    assert 1 <= parsed.top_k <= MAX_TOP_K and type(parsed.top_k) is int
    assert parsed.model is None or (isinstance(parsed.model, str) and parsed.model)
    if parsed.url is not None:
        assert isinstance(parsed.url, str) and parsed.url.strip()
    else:
        assert 0 < len(parsed.image) <= MAX_IMAGE_BYTES


@fast
@given(
    fields=st.dictionaries(
        st.sampled_from(["url", "model", "top_k", "image", "other"]) | st.text(max_size=5),
        json_values,
    )
)
def test_any_json_object_parses_or_is_a_4xx(fields):
    try:
        _check_parsed(_parse(json=fields))
    except ApiError as exc:
        assert 400 <= exc.status < 500, exc


@fast
@given(body=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_json_body_bytes_parse_or_are_a_4xx(body):
    try:
        _check_parsed(_parse(data=body, content_type="application/json"))
    except ApiError as exc:
        assert 400 <= exc.status < 500, exc


@fast
@given(
    top_k=st.text(max_size=6),
    model=st.text(max_size=10),
    image=st.binary(min_size=0, max_size=MAX_IMAGE_BYTES + 10),
)
@example(top_k="3\x1f", model="", image=b"x")  # whitespace to strip() but not to int(): was a 500
def test_any_multipart_form_parses_or_is_a_4xx(top_k, model, image):
    data = {"top_k": top_k, "model": model, "image": (io.BytesIO(image), "x.png")}
    try:
        parsed = _parse(data=data, content_type="multipart/form-data")
    except ApiError as exc:
        assert 400 <= exc.status < 500, exc
        return
    _check_parsed(parsed)
    assert parsed.top_k == (int(top_k.strip()) if top_k.strip() else 5)


# --- URLs -----------------------------------------------------------------------------------

PUBLIC = "93.184.216.34"
policy = FetchPolicy(resolver=lambda host, port: [PUBLIC], total_timeout_s=5.0)


def _checked(url: str):
    with _Deadline(5.0) as deadline:
        return _check_url(url, policy, deadline)


def _ipv4_spellings(address: int) -> st.SearchStrategy[str]:
    octets = address.to_bytes(4, "big")
    return st.sampled_from([
        str(address),  # 2130706433
        hex(address),  # 0x7f000001
        ".".join(f"0{o:o}" for o in octets),  # 0177.0.0.01
        ".".join(hex(o) for o in octets),  # 0x7f.0x0.0x0.0x1
        f"{octets[0]}.{int.from_bytes(octets[1:], 'big')}",  # 127.1
        f"{octets[0]}.{octets[1]}.{int.from_bytes(octets[2:], 'big')}",
        ".".join(str(o) for o in octets),
    ])  # fmt: skip


urls = st.builds(
    "{}://{}{}{}".format,
    st.sampled_from(["http", "https", "HTTP", "ftp", "file", ""]),
    st.sampled_from(["", "user:pw@", "@"]) | st.text(max_size=3),
    st.sampled_from(["images.example.com", "localhost", "metadata", "[::1]", "1.2.3.4", ""])
    | st.text(max_size=20),
    st.sampled_from(["", ":80", ":443", ":8080", ":0", ":99999", "/a.jpg", "/%2e%2e/"])
    | st.text(max_size=10),
)


@fast
@given(url=urls | st.text(max_size=60))
def test_any_url_is_checked_or_refused_never_a_crash(url):
    try:
        target = _checked(url)
    except ApiError as exc:
        assert 400 <= exc.status < 600, exc
        return
    # What is let through goes to an allowed port of a public address, and nowhere else.
    assert target.port in policy.allowed_ports and target.scheme in ("http", "https")
    assert all(ipaddress.ip_address(a).is_global for a in target.addresses)


private_v4 = st.integers(0, 2**32 - 1).filter(
    lambda n: (
        not ipaddress.IPv4Address(n).is_global
        or ipaddress.IPv4Address(n) in ipaddress.ip_network("100.64.0.0/10")
    )
)


@fast
@given(data=st.data(), address=private_v4)
def test_a_private_ipv4_address_is_refused_however_it_is_spelled(data, address):
    spelled = data.draw(_ipv4_spellings(address))
    assume(spelled)
    with pytest.raises(UrlNotAllowed):
        _checked(f"http://{spelled}/image.jpg")


@fast
@given(address=private_v4)
def test_a_name_resolving_to_a_private_address_is_refused(address):
    private = FetchPolicy(resolver=lambda host, port: [PUBLIC, str(ipaddress.IPv4Address(address))])
    with _Deadline(5.0) as deadline, pytest.raises(UrlNotAllowed):
        _check_url("http://images.example.com/a.jpg", private, deadline)


def test_a_public_url_passes_the_check():
    """The refusals above are not a check that refuses everything."""
    assert _checked("http://images.example.com/a.jpg").addresses == (PUBLIC,)
