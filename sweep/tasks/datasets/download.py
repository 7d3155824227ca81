"""Fetching a dataset's official files into the data root, all or nothing.

Everything is fetched, checked and unpacked inside a hidden staging folder in the data root
(`sweep.core.atomic.temporary_path`, so the final rename stays on one file system); one rename then
publishes the finished folder. A failure removes the staging folder and leaves the data root as
it was; a killed process leaves only that hidden folder, which no loader ever looks into.

Mirrors: `mirror` (the `--mirror` option, or $PRUNE_SWEEP_MIRROR) replaces the scheme and host of
the registry's URLs and keeps their paths, e.g. http://127.0.0.1:8000 serves
/~kriz/cifar-10-python.tar.gz. The MD5s are those of the official files and are checked whatever
the host; files that differ from the official release (a test server, a re-packed copy) load only
with `verify=False` (`--skip-checksums`, or PRUNE_SWEEP_SKIP_CHECKSUMS=1), which logs a warning
naming each unverified file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tqdm import tqdm

from sweep.catalog.datasets import Archive, Download
from sweep.core.atomic import temporary_path
from sweep.core.errors import DataMissingError, UserError

log = logging.getLogger(__name__)

MIRROR_ENV = "PRUNE_SWEEP_MIRROR"
SKIP_CHECKSUMS_ENV = "PRUNE_SWEEP_SKIP_CHECKSUMS"  # "1": the download and the CIFAR loader accept
# files whose MD5 differs from the official release (and log a warning for each)
SKIP_CHECKSUMS_OPTION = "--skip-checksums"
_CHUNK = 1 << 20
_TIMEOUT_S = 60
_USER_AGENT = "prune-sweep (python urllib)"


def mirrored(url: str, mirror: str | None) -> str:
    """`url` served by `mirror`: the mirror's scheme, host and path prefix, then `url`'s path."""
    if not mirror:
        return url
    base, original = urlsplit(mirror), urlsplit(url)
    return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + original.path, "", ""))


def check_mirror(mirror: str | None) -> None:
    """A UserError unless `mirror` is None or an http(s) URL with a host."""
    if mirror is None:
        return
    parts = urlsplit(mirror)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(
            f"mirror {mirror!r} is not an http(s) URL with a host; "
            "expected e.g. http://127.0.0.1:8000 or https://host/prefix"
        )


def fetch(download: Download, root: Path, mirror: str | None, verify: bool) -> Path:
    """Download, check and unpack `download` into `root / download.folder`; returns that folder.

    Errors are DataMissingError / UserError with one line naming the URL or folder at fault; the
    data root is then as before (a data root this call created is removed again).
    """
    target = root / download.folder
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DataMissingError(
            f"{target} exists but does not hold the complete download; "
            "move it away (or complete it by hand) and rerun"
        )
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]  # deepest first
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = temporary_path(root / download.folder.replace("/", "-"))
        staging.mkdir()
    except OSError as error:
        raise UserError(
            f"data root {root} is not writable ({error.strerror}); "
            "pass --data-root DIR with a folder you can write"
        ) from error
    done = False
    try:
        _fetch_into(download, staging, mirror, verify, target)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in made if not done else ():
            with contextlib.suppress(OSError):  # kept if something else is in it now
                folder.rmdir()
    return target


def _fetch_into(
    download: Download, staging: Path, mirror: str | None, verify: bool, target: Path
) -> None:
    """Fetch every archive into `staging`, then rename the finished folder onto `target`."""
    unpacked = staging / "unpacked"
    unpacked.mkdir()
    for archive in download.archives:
        url = mirrored(archive.url, mirror)
        print(f"fetching {url} for {target}", file=sys.stderr)
        path = _download(url, staging / archive.filename)
        _check_md5(path, archive, url, verify)
        if archive.unpack:
            _unpack(path, unpacked, url)
        else:
            (unpacked / download.folder).mkdir(parents=True, exist_ok=True)
            path.rename(unpacked / download.folder / archive.filename)
    result = unpacked / download.folder
    if not result.is_dir():
        held = ", ".join(sorted(p.name for p in unpacked.iterdir())) or "nothing"
        raise DataMissingError(
            f"the download of {download.folder} holds {held}, not {download.folder}/; "
            "the mirror serves other archives than the official release"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(result, target)  # one rename publishes the whole folder
    except OSError as error:
        raise DataMissingError(
            f"could not move the download into {target} ({error.strerror}); rerun"
        ) from error


def _download(url: str, path: Path) -> Path:
    """Stream `url` into `path` with a progress bar on stderr."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response, open(path, "wb") as f:
            size = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, desc=path.name, unit="B", unit_scale=True, file=sys.stderr,
                      disable=None) as bar:  # fmt: skip
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            if size is not None and f.tell() != size:
                raise DataMissingError(
                    f"downloading {url} stopped after {f.tell()} of {size} bytes; rerun to retry"
                )
    except urllib.error.HTTPError as error:
        raise DataMissingError(
            f"downloading {url} failed: HTTP {error.code} {error.reason}"
        ) from error
    except OSError as error:  # URLError, refused or reset connections, timeouts, a full disk
        network = isinstance(error, urllib.error.URLError | ConnectionError | TimeoutError)
        hint = (
            f"; check the network, or pass --mirror URL (or set {MIRROR_ENV}) to use a copy"
            if network
            else ""
        )
        reason = getattr(error, "reason", None) or error
        raise DataMissingError(f"downloading {url} failed ({reason}){hint}") from error
    return path


def _check_md5(path: Path, archive: Archive, url: str, verify: bool) -> None:
    if not verify:
        log.warning(
            "%s: NOT verifying %s against the MD5 of the official release",
            SKIP_CHECKSUMS_OPTION, url,
        )  # fmt: skip
        return
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != archive.md5:
        raise DataMissingError(
            f"{url} has MD5 {digest.hexdigest()}, not the official {archive.md5}: the download "
            f"is corrupt or the mirror serves other files; rerun, or pass {SKIP_CHECKSUMS_OPTION} "
            f"(or set {SKIP_CHECKSUMS_ENV}=1) to use them unverified"
        )


def _unpack(path: Path, into: Path, url: str) -> None:
    """Extract a tar archive; the "data" filter refuses absolute paths, links out and devices."""
    try:
        with tarfile.open(path) as tar:
            members = tqdm(tar, desc=f"unpacking {path.name}", unit=" files", file=sys.stderr,
                           disable=None)  # fmt: skip
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise DataMissingError(
            f"{url} is not a readable tar archive ({_tar_reason(error)})"
        ) from error


def _tar_reason(error: BaseException) -> str:
    """tarfile's complaint in one line: opening by guess lists every compression it tried, one
    per line, which says no more than this."""
    lines = str(error).splitlines()
    if len(lines) > 1:
        return "neither gzip, bzip2, xz nor plain tar data"
    return lines[0] if lines else type(error).__name__
