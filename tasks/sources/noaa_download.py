"""Download NOAA MarineCadastre daily AIS zips (`<base_url>/<year>/AIS_<yyyy>_<mm>_<dd>.zip`, one CSV
each) into a folder, for the nightly job.

Each file arrives as `<name>.part`, is resumed with an HTTP Range request after a dropped connection,
is checked (size, the server's MD5 when it sends one, the zip's CRCs) and only then renamed to its
final name and recorded in `downloads.json`. A later run skips a day whose file still matches that
record, without a request. A 404 means NOAA has not published the day yet: it is reported as missing.
Network failures are retried per file and end up in the report, never raised: the caller decides.

A base_url may carry credentials (`https://user:token@host/...`). They are sent as HTTP basic auth
and never appear in logs, the report or the manifest (shown as `https://***@host/...`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import shutil
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.errors import ConfigError, InputError

log = logging.getLogger(__name__)

DAILY_PATTERN = "{year}/AIS_{year}_{month:02d}_{day:02d}.zip"
MANIFEST_NAME = "downloads.json"
CHUNK_BYTES = 1 << 20
RETRY_STATUSES = {429, 500, 502, 503, 504}


@dataclass
class DownloadReport:
    """What one download_days call did, per day of the range."""

    downloaded: list[Path] = field(default_factory=list)   # fetched and verified by this call
    skipped: list[date] = field(default_factory=list)      # already ingested, or already here and intact
    missing: list[date] = field(default_factory=list)      # 404: not published (yet)
    failed: dict[date, str] = field(default_factory=dict)  # still failing after the retries, with the last reason
    # every day whose verified zip is in dest_dir after this call (fetched now or by an earlier run),
    # except the days skipped as already ingested: what the ingest step should read
    files: dict[date, Path] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        parts = [f"downloaded {len(self.downloaded)}", f"skipped {len(self.skipped)}"]
        parts.append(f"missing {len(self.missing)}" + (f" ({', '.join(map(str, self.missing))})" if self.missing else ""))
        failed = "; ".join(f"{day}: {reason}" for day, reason in self.failed.items())
        parts.append(f"failed {len(self.failed)}" + (f" ({failed})" if failed else ""))
        return ", ".join(parts)


def daily_file_url(base_url: str, day: date, pattern: str = DAILY_PATTERN) -> str:
    """The URL of one day's file: base_url joined with the pattern filled from `day`."""
    return base_url.rstrip("/") + "/" + pattern.format(year=day.year, month=day.month, day=day.day).lstrip("/")


def redact_url(url: str) -> str:
    """`https://user:token@host/x` -> `https://***@host/x`; a URL without credentials is unchanged."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def download_days(
    base_url: str,
    start: date,
    end: date,
    dest_dir: Path,
    *,
    already_ingested: Iterable[date] = (),
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 60,
    max_wait_s: float = 120.0,
    pattern: str = DAILY_PATTERN,
) -> DownloadReport:
    """Fetch every day of [start, end] not already ingested and not already complete in dest_dir.

    Each file gets 1 + `retries` attempts on connection errors, timeouts, 429 and 5xx, waiting
    backoff_s * 2**n between them, or the server's Retry-After; either capped at max_wait_s.
    """
    if start > end:
        raise ConfigError(f"download start {start} is after end {end}; swap them or fix the dates")
    if retries < 0:
        raise ConfigError(f"retries must be 0 or more, not {retries}")
    clean_base, auth = _split_credentials(base_url)
    shown_base = redact_url(base_url)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(dest_dir / MANIFEST_NAME)
    ingested = set(already_ingested)
    report = DownloadReport()

    # Accept-Encoding identity: sizes and checksums are of the file as stored, not a re-encoding
    with httpx.Client(auth=auth, timeout=timeout_s, follow_redirects=True, headers={"Accept-Encoding": "identity"}) as client:
        for day in _days(start, end):
            url = daily_file_url(clean_base, day, pattern)
            name = PurePosixPath(urlsplit(url).path).name
            final = dest_dir / name
            if day in ingested:
                report.skipped.append(day)
                continue
            if _matches_manifest(final, manifest.get(name)):
                report.skipped.append(day)
                report.files[day] = final
                continue
            if final.exists():
                log.warning("%s does not match %s; downloading it again", final, MANIFEST_NAME)
            shown_url = daily_file_url(shown_base, day, pattern)
            part = final.with_name(name + ".part")
            outcome = _fetch_with_retries(client, url, part, name, retries, backoff_s, max_wait_s)
            if outcome == "missing":
                log.info("%s: not published (404) at %s", day, shown_url)
                report.missing.append(day)
            elif outcome is not None:
                log.warning("%s: giving up on %s: %s", day, shown_url, outcome)
                report.failed[day] = outcome
            else:
                size, sha256 = _size_and_sha256(part)
                os.replace(part, final)
                manifest[name] = {
                    "name": name, "size": size, "sha256": sha256, "url": shown_url,
                    "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
                _write_manifest(dest_dir / MANIFEST_NAME, manifest)
                log.info("downloaded %s (%d bytes) from %s", name, size, shown_url)
                report.downloaded.append(final)
                report.files[day] = final
    log.info("NOAA download %s..%s: %s", start, end, report.summary)
    return report


def open_zip_csv(zip_path: Path, dest_dir: Path) -> Path:
    """Extract the one CSV in a NOAA daily zip into dest_dir (atomically) and return its path.

    Directories in member names are dropped, so nothing lands outside dest_dir."""
    zip_path, dest_dir = Path(zip_path), Path(dest_dir)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{zip_path} is not a readable zip ({exc}); delete it and download the day again") from exc
    with archive:
        # __MACOSX/ holds resource-fork copies (._name.csv) that zips made on a Mac carry
        csvs = [
            m for m in archive.infolist()
            if not m.is_dir() and m.filename.lower().endswith(".csv") and not m.filename.startswith("__MACOSX/")
        ]
        if len(csvs) != 1:
            found = ", ".join(m.filename for m in csvs) or "none"
            raise InputError(f"{zip_path} must hold exactly one .csv, found {len(csvs)} ({found}); use a NOAA daily AIS zip")
        member = csvs[0]
        name = PurePosixPath(member.filename.replace("\\", "/")).name
        if name in ("", ".", ".."):
            raise InputError(f"{zip_path}: member {member.filename!r} has no usable file name; use a NOAA daily AIS zip")
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / name
        tmp = target.with_name(name + ".part")
        try:
            with archive.open(member) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK_BYTES)
        except zipfile.BadZipFile as exc:
            tmp.unlink(missing_ok=True)
            raise InputError(f"{zip_path}: {member.filename} is corrupt ({exc}); delete the zip and download it again") from exc
        tmp.replace(target)
    return target


# --- one file ------------------------------------------------------------------------------------


class _Retry(Exception):
    """A failure worth another attempt; `wait_s` is the server's Retry-After when it sent one."""

    def __init__(self, reason: str, wait_s: float | None = None):
        super().__init__(reason)
        self.reason, self.wait_s = reason, wait_s


class _GiveUp(Exception):
    """A failure another attempt will not fix (401, 403, ...)."""


class _NotPublished(Exception):
    """404: the day's file does not exist (yet)."""


def _fetch_with_retries(client: httpx.Client, url: str, part: Path, name: str,
                        retries: int, backoff_s: float, max_wait_s: float) -> str | None:
    """None once `part` holds the complete, verified file; "missing" on 404; else why it failed."""
    for attempt in range(retries + 1):
        try:
            _fetch_once(client, url, part)
            return None
        except _NotPublished:
            part.unlink(missing_ok=True)
            return "missing"
        except _GiveUp as exc:
            return str(exc)
        except _Retry as exc:
            if attempt == retries:
                return f"{exc.reason} (after {retries + 1} attempts)"
            wait = backoff_s * 2**attempt if exc.wait_s is None else exc.wait_s
            wait = min(wait, max_wait_s)
            log.warning("%s: %s; retry %d of %d in %.2fs", name, exc.reason, attempt + 1, retries, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _fetch_once(client: httpx.Client, url: str, part: Path) -> None:
    """One request: start or resume `part`, then verify it. Raises _Retry, _GiveUp or _NotPublished."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with client.stream("GET", url, headers=headers) as resp:
            expected_md5 = _etag_md5(resp.headers.get("ETag"))
            body_md5, total = _write_body(resp, part, offset)
    except httpx.TransportError as exc:
        # a dropped connection keeps what arrived in `part`; the next attempt resumes from there
        raise _Retry(f"{type(exc).__name__}: {exc}") from exc

    size = part.stat().st_size
    if total is not None and size != total:
        if size > total:
            part.unlink()
        raise _Retry(f"got {size} of {total} bytes")
    sent_md5 = _content_md5(resp.headers.get("Content-MD5"))
    if sent_md5 is not None and body_md5 != sent_md5:
        part.unlink()
        raise _Retry(f"Content-MD5 mismatch: server says {sent_md5}, received {body_md5}")
    if expected_md5 is not None:
        whole_md5 = _file_digest(part, "md5")
        if whole_md5 != expected_md5:
            part.unlink()
            raise _Retry(f"ETag md5 mismatch: server says {expected_md5}, received {whole_md5}")
    problem = _zip_problem(part)
    if problem:
        part.unlink()
        raise _Retry(problem)


def _write_body(resp: httpx.Response, part: Path, offset: int) -> tuple[str, int | None]:
    """Write the response body to `part` (appending on 206); the body's md5 and the file's expected size."""
    status = resp.status_code
    if status == 404:
        raise _NotPublished()
    if status == 416:
        # our .part is at or past the end of the server's file: it is stale, start over
        part.unlink(missing_ok=True)
        raise _Retry(f"HTTP 416 for a resume at byte {offset}; restarting from zero", wait_s=0)
    if status in RETRY_STATUSES:
        raise _Retry(f"HTTP {status}", _retry_after_s(resp.headers.get("Retry-After")))
    if status == 200:
        mode, total = "wb", _int_or_none(resp.headers.get("Content-Length"))  # range ignored or none asked
    elif status == 206:
        first, total = _content_range(resp.headers.get("Content-Range"))
        if first != offset:
            part.unlink(missing_ok=True)
            raise _Retry(f"server resumed at byte {first}, not {offset}; restarting from zero", wait_s=0)
        mode = "ab"
    else:
        raise _GiveUp(f"HTTP {status}")
    body_md5 = hashlib.md5()
    with open(part, mode) as fh:
        # no chunk_size: httpx would buffer up to it, and a dropped connection would lose the buffer
        for chunk in resp.iter_raw():
            fh.write(chunk)
            body_md5.update(chunk)
    return body_md5.hexdigest(), total


def _zip_problem(path: Path) -> str | None:
    if not zipfile.is_zipfile(path):
        return "not a zip file"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"corrupt zip: {exc}"
    return f"corrupt zip: CRC error in {bad}" if bad else None


# --- headers -------------------------------------------------------------------------------------


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _content_md5(value: str | None) -> str | None:
    """Content-MD5 (base64 of the 16-byte digest of this response's body) as hex; None if absent or malformed."""
    if not value:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 16 else None


def _etag_md5(value: str | None) -> str | None:
    """A strong ETag that is a plain md5 hex (S3-style) as lowercase hex; any other ETag says nothing."""
    match = re.fullmatch(r'"?([0-9a-fA-F]{32})"?', (value or "").strip())
    return match.group(1).lower() if match else None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """`bytes 100-999/1000` -> (100, 1000); total None when the server sends `*`."""
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    if not match:
        return None, None
    return int(match.group(1)), _int_or_none(match.group(2))


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


# --- files and manifest --------------------------------------------------------------------------


def _split_credentials(base_url: str) -> tuple[str, httpx.BasicAuth | None]:
    """The URL without userinfo, plus basic auth built from it: the URL then never carries the secret."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"download base_url {redact_url(base_url)!r} must be an http(s) URL with a host")
    if "@" not in parts.netloc:
        return base_url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), httpx.BasicAuth(unquote(user), unquote(password))


def _days(start: date, end: date) -> Iterable[date]:
    for n in range((end - start).days + 1):
        yield start + timedelta(days=n)


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _size_and_sha256(path: Path) -> tuple[int, str]:
    return path.stat().st_size, _file_digest(path, "sha256")


def _matches_manifest(path: Path, entry: dict | None) -> bool:
    if entry is None or not path.exists() or path.stat().st_size != entry.get("size"):
        return False
    return _file_digest(path, "sha256") == entry.get("sha256")


def _read_manifest(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s (%s); files not listed in it are downloaded again", path, exc)
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _write_manifest(path: Path, manifest: dict[str, dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


# Plain function above; this wrapper is the Prefect task boundary. Retries live inside, per file.
# No cache: the result depends on the server and on dest_dir, not on the arguments alone.
download_task = task(name="download-noaa-days", retries=0, cache_policy=NO_CACHE)(download_days)
