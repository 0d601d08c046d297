"""Build-time download of weights files into a directory, with a lock of their digests.

Runs inside `docker build` (and nowhere at serving time). torchvision files are downloaded
with requests rather than `torch.hub.download_url_to_file` because the latter has no
timeout (a stalled server would hang the build forever) and we want the full sha256 for
the lock computed in the same pass. Hub files go through huggingface_hub's own download
code; we then check their sha256 against the pinned one.

Every file is checked against its full pin (weights/pins.py: the catalog's, else the catalog's
lock); a file with no pin yet is checked against torchvision's hash prefix and pinned in the
lock, unless `frozen`, which refuses it. Downloads go over https; plain http only to this
machine (127.0.0.0/8, ::1, localhost: tests and a local mirror), where no network lies between.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import requests
from tqdm import tqdm

from runtime.files import sha256_of
from weights.catalog import DEFAULT_CATALOG, Catalog, CatalogEntry
from weights.lock import FetchedFile, read_lock, write_lock
from weights.pins import Pin, pin_for, pins_path, read_pins, write_pins

MIRROR_ENV = "WEIGHTS_MIRROR"
FROZEN_ENV = "WEIGHTS_FROZEN"
HUB_ENDPOINT_ENV = "HF_ENDPOINT"
CONNECT_TIMEOUT_S = 15
READ_TIMEOUT_S = 60  # between two chunks; a whole large file may take minutes
_CHUNK = 1 << 20
BUILTIN_LOCK = DEFAULT_CATALOG.with_suffix(".lock")


class FetchError(RuntimeError):
    """A download failed; the message names the file, the URL and what to do."""


def fetch(
    ids: Iterable[str],
    dest: Path,
    *,
    catalog: Catalog,
    mirror: str | None = None,
    hub_endpoint: str | None = None,
    progress: bool = True,
    frozen: bool | None = None,
) -> list[FetchedFile]:
    """Download (or verify and skip) each model's file into `dest`; update the lock.

    frozen (default: $WEIGHTS_FROZEN): refuse any file that neither the catalog nor its lock
    pins; never write the catalog's lock.
    """
    frozen = _env_flag(FROZEN_ENV) if frozen is None else frozen
    dest = Path(dest)
    lock_path = pins_path(catalog)
    locked = read_pins(lock_path)
    # A user's catalog is read on top of the built-in one: the built-in lock pins those files.
    builtin = {} if lock_path == BUILTIN_LOCK else read_pins(BUILTIN_LOCK)
    entries = [catalog.entry(model_id) for model_id in ids]
    pins = {entry.id: pin_for(entry, {**builtin, **locked}) for entry in entries}
    unpinned = [entry for entry in entries if pins[entry.id] is None]
    if frozen and unpinned:
        names = ", ".join(f"{entry.id} ({entry.file_name})" for entry in unpinned)
        raise FetchError(
            f"no full sha256 pin for {names}: neither the catalog nor {lock_path} pins it, "
            "and a frozen fetch trusts no first download. On a machine with network, run "
            f"`python -m weights fetch --models {','.join(e.id for e in unpinned)} --dest DIR` "
            f"(not frozen): it writes the pin into {lock_path.name}; commit that file."
        )
    dest.mkdir(parents=True, exist_ok=True)
    records = read_lock(dest)
    fetched = []
    for entry in entries:
        pin = pins[entry.id]
        record = _present(entry, dest, records.get(entry.id), pin)
        if record is None:
            record = _download(entry, dest, mirror, hub_endpoint, progress, pin)
        if pin is None:
            locked[entry.id] = Pin(record.file, record.sha256, record.size, str(lock_path))
            write_pins(lock_path, locked)
            print(
                f"{entry.id}: pinned {record.file} (sha256 {record.sha256}) in {lock_path}: "
                "commit it, so that every later build verifies against it",
                flush=True,
            )
        records[entry.id] = record
        write_lock(dest, records)  # after each file: an interrupted build keeps what it got
        fetched.append(record)
    return fetched


def _download(
    entry: CatalogEntry,
    dest: Path,
    mirror: str | None,
    hub_endpoint: str | None,
    progress: bool,
    pin: Pin | None,
) -> FetchedFile:
    """Fetch the entry's file from wherever it lives; every source ends in the same check."""
    if entry.hub_source is not None:
        return _fetch_hub(entry, dest, hub_endpoint, progress, pin)
    if entry.gcs_object is not None:
        from weights.sources import fetch_gcs

        return _stage(entry, dest, pin, entry.source_description, fetch_gcs)
    if entry.local_file is not None:
        from weights.sources import copy_local

        return _stage(entry, dest, pin, entry.source_description, copy_local)
    return _fetch_url(entry, dest, None if entry.own else mirror, progress, pin)


def _stage(entry, dest, pin, where, write) -> FetchedFile:
    """`write(entry, path)` into a hidden file of `dest`; checked, then renamed into place."""
    fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{entry.file_name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    print(f"{entry.id}: fetching {where}", flush=True)
    try:
        write(entry, tmp)
        digest, size = sha256_of(tmp), tmp.stat().st_size
        if not _digest_ok(entry, digest, size, pin):
            raise FetchError(_mismatch(entry, where, digest, size, pin))
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest / entry.file_name)
    except OSError as exc:
        raise _disk_error(exc, entry, dest) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return _record(entry, dest / entry.file_name, digest, where)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _present(
    entry: CatalogEntry, dest: Path, old: FetchedFile | None, pin: Pin | None
) -> FetchedFile | None:
    """A record for the file if it is already there and correct, else None."""
    path = dest / entry.file_name
    if not path.is_file():
        return None
    digest = sha256_of(path)
    if not _digest_ok(entry, digest, path.stat().st_size, pin):
        return None
    if old is not None and old.file == entry.file_name and not old.untrained:
        if old.sha256 == digest:
            print(f"{entry.id}: {path.name} present, sha256 verified; skipping", flush=True)
            return old
        return None
    print(f"{entry.id}: {path.name} present and matches; skipping", flush=True)
    return _record(entry, path, digest, entry.source_description)


def _digest_ok(entry: CatalogEntry, digest: str, size: int, pin: Pin | None) -> bool:
    if pin is not None:
        return digest == pin.sha256 and (pin.size is None or size == pin.size)
    return digest.startswith(entry.hash_prefix or "")


def _mismatch(entry: CatalogEntry, url: str, digest: str, size: int, pin: Pin | None) -> str:
    if pin is None:
        expected = f"expected prefix {entry.hash_prefix}"
    else:
        expected = f"expected {pin.sha256}" + (f", {pin.size:,} bytes" if pin.size else "")
        expected += f" (pinned in {pin.where})"
    return (
        f"{entry.id}: sha256 mismatch for {url}: {expected}, got {digest}, {size:,} bytes. "
        "The file was removed; the download was corrupted or the mirror serves a different file."
    )


def check_source(url: str, what: str) -> None:
    """Refuse a plain-http source unless it is on this machine (see the module's docstring)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    host = (parts.hostname or "").lower()
    if parts.scheme == "http" and _is_this_machine(host):
        return
    raise FetchError(
        f"{what} {url} is not https: weights are only downloaded over TLS (plain http only "
        "from this machine, 127.0.0.1 or ::1, e.g. a local test mirror); use an https URL"
    )


def _is_this_machine(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _record(entry: CatalogEntry, path: Path, digest: str, source: str) -> FetchedFile:
    return FetchedFile(
        id=entry.id,
        file=path.name,
        sha256=digest,
        size=path.stat().st_size,
        source=source,
        entry=entry.to_dict(),
    )


def download_url(entry: CatalogEntry, mirror: str | None) -> str:
    """The URL to download from: the entry's own, or the same file name under a mirror."""
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV, "")
    if not mirror:
        return entry.source_url
    return f"{mirror.rstrip('/')}/{entry.file_name}"


def _fetch_url(
    entry: CatalogEntry, dest: Path, mirror: str | None, progress: bool, pin: Pin | None
) -> FetchedFile:
    url = download_url(entry, mirror)
    check_source(url, f"{entry.id}: the download URL")
    target = dest / entry.file_name
    host = urlsplit(url).netloc
    print(f"{entry.id}: downloading {url}", flush=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{entry.file_name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with (
            os.fdopen(fd, "wb") as out,
            requests.get(url, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) as resp,
        ):
            if resp.status_code != 200:
                raise FetchError(
                    f"{entry.id}: {url} answered HTTP {resp.status_code}; "
                    "check the URL (or WEIGHTS_MIRROR) and try again"
                )
            total = int(resp.headers.get("Content-Length", 0)) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=entry.file_name, disable=not progress
            ) as bar:
                for chunk in resp.iter_content(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if total is not None and out.tell() != total:
                raise FetchError(
                    f"{entry.id}: {url} ended after {out.tell()} of {total} bytes; try again"
                )
    except requests.RequestException as exc:
        tmp.unlink(missing_ok=True)
        raise FetchError(
            f"{entry.id}: could not download {url} ({type(exc).__name__}: {exc}). "
            f"Fetching weights needs network access to {host} at build time "
            f"(or set {MIRROR_ENV} to a reachable mirror)."
        ) from exc
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _disk_error(exc, entry, dest) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    hexdigest = digest.hexdigest()
    size = tmp.stat().st_size
    if not _digest_ok(entry, hexdigest, size, pin):
        tmp.unlink(missing_ok=True)
        raise FetchError(_mismatch(entry, url, hexdigest, size, pin))
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return _record(entry, target, hexdigest, url)


def _fetch_hub(
    entry: CatalogEntry, dest: Path, endpoint: str | None, progress: bool, pin: Pin | None
) -> FetchedFile:
    # Imported here: huggingface_hub reads HF_* variables at import time, and the
    # serving process must never import it with network settings.
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    hub = entry.hub_source
    assert hub is not None
    if constants.HF_HUB_OFFLINE:
        raise FetchError(
            f"{entry.id}: HF_HUB_OFFLINE is set in this process, so the Hub cannot be reached; "
            "unset it for the fetch step (serving images set it after fetching)"
        )
    endpoint = endpoint or os.environ.get(HUB_ENDPOINT_ENV) or None
    if endpoint:
        check_source(endpoint, f"{entry.id}: the Hub endpoint")
    where = f"{endpoint or 'the Hugging Face Hub'}: {hub.repo}@{hub.revision}/{hub.file}"
    print(f"{entry.id}: downloading {where}", flush=True)
    staging = Path(tempfile.mkdtemp(dir=dest, prefix=f".{entry.id}.hub."))
    (disable_progress_bars if not progress else enable_progress_bars)()
    try:
        downloaded = Path(
            hf_hub_download(
                hub.repo,
                hub.file,
                revision=hub.revision,
                endpoint=endpoint,
                local_dir=staging,
            )
        )
        digest = sha256_of(downloaded)
        size = downloaded.stat().st_size
        if not _digest_ok(entry, digest, size, pin):
            raise FetchError(_mismatch(entry, where, digest, size, pin))
        target = dest / entry.file_name
        os.chmod(downloaded, 0o644)
        os.replace(downloaded, target)
        return _record(
            entry, target, digest, f"{endpoint or 'hf'}://{hub.repo}@{hub.revision}/{hub.file}"
        )
    except (HfHubHTTPError, LocalEntryNotFoundError) as exc:
        raise FetchError(
            f"{entry.id}: could not download {where} ({type(exc).__name__}: {exc}). "
            f"Fetching weights needs network access to the Hub at build time "
            f"(or set {HUB_ENDPOINT_ENV} to a reachable endpoint)."
        ) from exc
    except OSError as exc:
        raise _disk_error(exc, entry, dest) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _disk_error(exc: OSError, entry: CatalogEntry, dest: Path) -> Exception:
    if exc.errno == errno.ENOSPC:
        size = entry.weights_enum.meta.get("_file_size") if entry.weights_enum else None
        need = f" (the file is about {size:.0f} MB)" if size else ""
        return FetchError(
            f"{entry.id}: no space left on the device holding {dest}{need}. "
            "Free some space or give the build a larger disk (Cloud Build: options.diskSizeGb)."
        )
    return FetchError(f"{entry.id}: could not write into {dest}: {exc}")
