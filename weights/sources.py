"""Where a user's own weights file may live besides http(s) and the Hub: this machine, or
Google Cloud Storage. Each writes the bytes to a path the fetch then checks (weights/fetch.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from weights.catalog import CatalogEntry

GCS_TIMEOUT_S = (15, 60)  # connect, and between two reads, as for the https downloads
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"  # google-cloud-storage's own: a local emulator


def _error(message: str) -> Exception:
    from weights.fetch import FetchError  # fetch imports this module lazily: no cycle

    return FetchError(message)


def copy_local(entry: CatalogEntry, target: Path) -> None:
    """Copy a file of this machine (the catalog resolved relative paths against its folder)."""
    source = entry.local_file
    assert source is not None
    if not source.is_file():
        raise _error(
            f"{entry.id}: the file {source} does not exist (a relative `file` is read from the "
            "catalog's folder; in an image build, put it under weights/, or use gs:// or https://)"
        )
    shutil.copyfile(source, target)


def fetch_gcs(entry: CatalogEntry, target: Path) -> None:
    """Download a gs:// object with Application Default Credentials.

    On Cloud Build that is the build's service account (it needs storage.objects.get on the
    bucket); on a laptop, `gcloud auth application-default login`. With $STORAGE_EMULATOR_HOST
    set, google-cloud-storage talks to that emulator, anonymously (the tests).
    """
    # Imported here: only a gs:// entry needs the client, and it is slow to import.
    import requests
    from google.api_core import exceptions as api
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    obj = entry.gcs_object
    assert obj is not None
    where = f"gs://{obj.bucket}/{obj.name}"
    try:
        client = storage.Client()
        blob = client.bucket(obj.bucket).blob(obj.name)
        with target.open("wb") as out:
            blob.download_to_file(out, timeout=GCS_TIMEOUT_S)
    except DefaultCredentialsError as exc:
        raise _error(
            f"{entry.id}: no Google credentials to read {where}: run "
            "`gcloud auth application-default login` here; on Cloud Build the build's service "
            "account is used (README, Your own classifier)"
        ) from exc
    except api.NotFound as exc:
        raise _error(f"{entry.id}: {where} does not exist (or the bucket does not)") from exc
    except api.Forbidden as exc:
        raise _error(
            f"{entry.id}: not allowed to read {where}: give the account that runs the fetch "
            "roles/storage.objectViewer on the bucket"
        ) from exc
    except (api.GoogleAPIError, requests.RequestException) as exc:
        raise _error(f"{entry.id}: could not download {where}: {exc}") from exc
