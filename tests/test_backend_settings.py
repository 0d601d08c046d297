"""The backend's settings from the environment, and the log fields it derives."""

from __future__ import annotations

import pytest

from backend.logs import trace_fields
from backend.settings import Settings, SettingsError
from runtime.settings import SessionSettings, available_cpus


def test_defaults():
    settings = Settings.from_env({})
    assert settings.models is None  # every bundle of the directory
    assert str(settings.bundles_dir) == "/opt/bundles"
    assert settings.url_allowed_ports == frozenset({80, 443})
    assert settings.session == SessionSettings(threads=available_cpus())
    assert not settings.url_allow_loopback and not settings.allow_untrained
    assert settings.url_total_timeout_s + 1 <= settings.graceful_timeout_s < 10


def test_values_are_read():
    settings = Settings.from_env(
        {
            "MODELS": "v2",
            "BUNDLES_DIR": "/b",
            "URL_ALLOWED_PORTS": "443,8443",
            "URL_ALLOW_LOOPBACK": "true",
            "INFERENCE_THREADS": "3",
            "ORT_OPTIMIZATION": "Extended",
            "ORT_MEMORY_ARENA": "1",
            "ORT_PREPACKING": "no",
            "ORT_SPINNING": "off",
            "MAX_IMAGE_MB": "2",
        }
    )
    assert settings.models == "v2" and str(settings.bundles_dir) == "/b"
    assert settings.url_allowed_ports == frozenset({443, 8443})
    assert settings.url_allow_loopback
    assert settings.session == SessionSettings(
        threads=3, optimization="extended", memory_arena=True, prepacking=False, spinning=False
    )
    assert settings.max_image_bytes == 2 * 1024 * 1024
    assert 12345 in Settings.from_env({"URL_ALLOWED_PORTS": "any"}).url_allowed_ports


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"INFERENCE_THREADS": "two"}, "INFERENCE_THREADS"),
        ({"INFERENCE_THREADS": "0"}, "INFERENCE_THREADS"),
        ({"ORT_OPTIMIZATION": "max"}, "ORT_OPTIMIZATION"),
        ({"ORT_MEMORY_ARENA": "maybe"}, "ORT_MEMORY_ARENA"),
        ({"URL_ALLOW_LOOPBACK": "maybe"}, "URL_ALLOW_LOOPBACK"),
        ({"URL_ALLOWED_PORTS": "80,http"}, "URL_ALLOWED_PORTS"),
        ({"URL_ALLOWED_PORTS": "70000"}, "URL_ALLOWED_PORTS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"URL_TOTAL_TIMEOUT_S": "9"}, "GRACEFUL_TIMEOUT_S"),
        ({"URL_TOTAL_TIMEOUT_S": "-1"}, "URL_TOTAL_TIMEOUT_S"),
    ],
)
def test_a_wrong_variable_is_named(env, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_trace_fields():
    trace = "105445aa7843bc8bf206b12000100000"
    fields = trace_fields(f"{trace}/1;o=1", "my-project")
    assert fields == {
        "logging.googleapis.com/trace": f"projects/my-project/traces/{trace}",
        "logging.googleapis.com/spanId": "0000000000000001",
    }
    assert trace_fields(None, "p") == {}
    assert trace_fields("not a trace!/x", "p") == {}
    assert "logging.googleapis.com/spanId" not in trace_fields("abc/²;o=1", "p")


# What glibc does with the serving process's allocator settings (backend/process.py), in a
# process of its own: for each block size, whether one allocated right after a block of that
# size was freed is a mapping of its own (by default glibc raises its mmap threshold to the
# size of a freed mapped block, so such a block comes from the heap, and stays there once
# freed); then, blocks of the heap freed below a live one, whether the serving settings gave
# their pages back.
_ALLOCATOR = """
import ctypes, sys, threading
from backend.process import allocator_for_loading, allocator_for_serving

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
MB = 1024 * 1024

def mapped_after_a_free(size):
    libc.free(libc.malloc(size))
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    mapped = libc.mallinfo2().hblkhd - before >= size
    libc.free(block)
    return mapped

def anonymous_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024

if sys.argv[1] == "loading":
    allocator_for_loading()
elif sys.argv[1] == "serving":
    allocator_for_serving()
# glibc serves a block from a free chunk of its heap, if one fits, before it asks for a mapping:
# measured in a new thread, whose arena holds none of the interpreter's freed blocks.
answers = []
measuring = threading.Thread(target=lambda: answers.extend(
    mapped_after_a_free(size) for size in (1 * MB, 8 * MB)))
measuring.start()
measuring.join()
print(answers)
allocator_for_loading()  # blocks of the heap, each between two live ones: no free() trims them
blocks = [libc.malloc(MB) for _ in range(64)]
for block in blocks:
    ctypes.memset(block, 1, MB)
for block in blocks[::2]:
    libc.free(block)
held = anonymous_mb()
allocator_for_serving()
print(held - anonymous_mb() > 16)
"""


@pytest.mark.parametrize(
    "allocator, mapped",
    [
        ("default", [False, False]),  # glibc's own: what the fixed thresholds prevent
        ("loading", [False, True]),  # under 4 MiB from the heap, reused; above, mapped
        ("serving", [True, True]),  # above 128 KiB mapped, given back when freed
    ],
)
def test_the_allocator_threshold_is_fixed_and_the_heap_given_back_once_loaded(allocator, mapped):
    import os
    import subprocess
    import sys

    from tests.backend_process import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    lines = subprocess.run(
        [sys.executable, "-c", _ALLOCATOR, allocator],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    assert lines[0] == str(mapped)
    assert lines[1] == "True"  # the freed heap pages given back once the sessions are open
