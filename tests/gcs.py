"""A real Cloud Storage emulator on 127.0.0.1 (gcp-storage-emulator), for gs:// sources.

google-cloud-storage talks to it when $STORAGE_EMULATOR_HOST names it, with the same client
code that reads a private bucket on Cloud Build with Application Default Credentials.
"""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.backend_process import free_port, stop_process
from weights.sources import EMULATOR_ENV


@contextmanager
def storage_emulator(log: Path):
    """Start the emulator (in memory); give its address, for $STORAGE_EMULATOR_HOST."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
             "--port", str(port), "--in-memory"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{address}/storage/v1/b", timeout=1)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    message = f"the storage emulator did not start:\n{log.read_text()}"
                    raise RuntimeError(message) from None
                time.sleep(0.1)
        yield address
    finally:
        stop_process(process)


def upload(address: str, bucket: str, name: str, path: Path, monkeypatch) -> str:
    """Put `path` into the emulator as gs://bucket/name; give that URL."""
    from google.cloud import storage

    monkeypatch.setenv(EMULATOR_ENV, address)
    client = storage.Client()
    target = client.lookup_bucket(bucket) or client.create_bucket(bucket)
    target.blob(name).upload_from_filename(str(path))
    return f"gs://{bucket}/{name}"
