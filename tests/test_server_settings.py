"""The HTTP front's settings (backend/server.py), read from the environment and checked."""

from __future__ import annotations

import pytest

from backend.settings import Settings, SettingsError
from runtime.limits import MAX_REQUEST_BYTES


def test_the_read_deadlines_and_the_buffered_bytes_come_from_the_environment(tmp_path):
    settings = Settings.from_env(
        {
            "BUNDLES_DIR": str(tmp_path),
            "HEADER_TIMEOUT_S": "2.5",
            "BODY_TIMEOUT_S": "30",
            "BUFFERED_BYTES_MAX": str(2 * MAX_REQUEST_BYTES),
        }
    )
    assert settings.header_timeout_s == 2.5 and settings.body_timeout_s == 30
    assert settings.buffered_bytes_max == 2 * MAX_REQUEST_BYTES
    defaults = Settings.from_env({"BUNDLES_DIR": str(tmp_path), "REQUEST_THREADS": "3"})
    assert defaults.buffered_bytes_max == 3 * MAX_REQUEST_BYTES  # each thread's next request


@pytest.mark.parametrize(
    ("name", "value"),
    [("HEADER_TIMEOUT_S", "0"), ("BODY_TIMEOUT_S", "soon"), ("BUFFERED_BYTES_MAX", "1024")],
)
def test_a_wrong_value_names_its_variable(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({"BUNDLES_DIR": str(tmp_path), name: value})
