"""NOAA daily-zip download against a real HTTP server on 127.0.0.1 that serves zips built here,
honours Range, and fails on request (500, 429, a connection dropped midway, a wrong checksum)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
import threading
import time
import zipfile
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tasks.errors import ConfigError, InputError
from tasks.sources.noaa_download import (
    MANIFEST_NAME,
    DownloadReport,
    daily_file_url,
    download_days,
    open_zip_csv,
)
from tests.conftest import NOAA_HEADER, noaa_row

D1, D2, D3 = date(2024, 1, 15), date(2024, 1, 16), date(2024, 1, 17)
FAST = {"backoff_s": 0.01, "timeout_s": 5}


def zip_name(day: date) -> str:
    return f"AIS_{day:%Y_%m_%d}.zip"


def day_zip(day: date, rows: int = 300) -> bytes:
    """A NOAA-shaped daily zip; stored uncompressed so a half-sent body is a real truncation."""
    lines = [",".join(NOAA_HEADER)]
    lines += [",".join(noaa_row(mmsi=str(366000000 + i), ts=f"{day}T{i % 24:02d}:{i % 60:02d}:00")) for i in range(rows)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"AIS_{day:%Y_%m_%d}.csv", "\n".join(lines) + "\n")
    return buf.getvalue()


class FakeNoaa:
    """What the server holds and how it should misbehave. `plan[name]` is a queue of behaviours
    for successive requests of that file; an empty queue means serve it properly."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.plan: dict[str, list[str]] = {}
        self.retry_after = "0"
        self.etag: str | None = None          # sent as-is when set
        self.requests: list[dict] = []        # name, range, authorization
        self.base_url = ""
        self.lock = threading.Lock()

    def serve(self, *days: date) -> None:
        for day in days:
            self.files[zip_name(day)] = day_zip(day)

    def hits(self, name: str) -> list[dict]:
        return [r for r in self.requests if r["name"] == name]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def do_GET(self) -> None:
        noaa: FakeNoaa = self.server.noaa
        name = self.path.rsplit("/", 1)[-1]
        with noaa.lock:
            noaa.requests.append({"name": name, "range": self.headers.get("Range"), "authorization": self.headers.get("Authorization")})
            queue = noaa.plan.get(name) or []
            behaviour = queue.pop(0) if queue else "ok"
        body = noaa.files.get(name)
        if body is None or not re.fullmatch(r"/htdata/AIS/\d{4}/AIS_\d{4}_\d\d_\d\d\.zip", self.path):
            return self._plain(404)
        if behaviour == "500":
            return self._plain(500)
        if behaviour == "429":
            return self._plain(429, {"Retry-After": noaa.retry_after})

        status, first = 200, 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and behaviour != "ignore_range":
            first = int(match.group(1))
            if first >= len(body):
                return self._plain(416, {"Content-Range": f"bytes */{len(body)}"})
            status = 206
        chunk = body[first:]
        md5 = hashlib.md5(b"not the file" if behaviour == "bad_md5" else chunk).digest()
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Content-MD5", base64.b64encode(md5).decode())
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{len(body) - 1}/{len(body)}")
        if noaa.etag is not None:
            self.send_header("ETag", noaa.etag)
        self.end_headers()
        if behaviour == "drop":
            # half the promised body, then the connection closes
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)

    def _plain(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """The client must reach the loopback server directly, never through a configured proxy."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")


@pytest.fixture
def noaa():
    fake = FakeNoaa()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.noaa = fake
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.base_url = f"http://127.0.0.1:{server.server_port}/htdata/AIS"
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_daily_file_url_follows_the_marinecadastre_layout():
    base = "https://coast.noaa.gov/htdata/CMSP/AISDataHandler/"
    assert daily_file_url(base, D1) == "https://coast.noaa.gov/htdata/CMSP/AISDataHandler/2024/AIS_2024_01_15.zip"
    assert daily_file_url("http://h/x", date(2023, 3, 5), "AIS_{year}_{month:02d}_{day:02d}.zip") == "http://h/x/AIS_2023_03_05.zip"


def test_downloads_every_day_byte_identical_and_records_the_manifest(noaa, tmp_path):
    noaa.serve(D1, D2, D3)
    report = download_days(noaa.base_url, D1, D3, tmp_path, **FAST)

    assert report.downloaded == [tmp_path / zip_name(d) for d in (D1, D2, D3)]
    assert report.files == {d: tmp_path / zip_name(d) for d in (D1, D2, D3)}
    assert (report.skipped, report.missing, report.failed) == ([], [], {})
    for path in report.downloaded:
        assert path.read_bytes() == noaa.files[path.name]
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.tmp"))
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    entry = manifest[zip_name(D2)]
    assert entry["size"] == len(noaa.files[zip_name(D2)])
    assert entry["sha256"] == hashlib.sha256(noaa.files[zip_name(D2)]).hexdigest()
    assert entry["url"] == f"{noaa.base_url}/2024/AIS_2024_01_16.zip"
    assert entry["downloaded_at"].endswith("+00:00")
    assert report.summary == "downloaded 3, skipped 0, missing 0, failed 0"


def test_retries_after_500_and_429_with_retry_after(noaa, tmp_path):
    noaa.serve(D1, D2)
    noaa.plan = {zip_name(D1): ["500", "500"], zip_name(D2): ["429"]}
    report = download_days(noaa.base_url, D1, D2, tmp_path, **FAST)

    assert [p.name for p in report.downloaded] == [zip_name(D1), zip_name(D2)]
    assert len(noaa.hits(zip_name(D1))) == 3
    assert len(noaa.hits(zip_name(D2))) == 2
    assert (tmp_path / zip_name(D1)).read_bytes() == noaa.files[zip_name(D1)]


def test_a_long_retry_after_is_capped(noaa, tmp_path):
    noaa.serve(D1)
    noaa.plan = {zip_name(D1): ["429"]}
    noaa.retry_after = "3600"
    began = time.monotonic()
    report = download_days(noaa.base_url, D1, D1, tmp_path, max_wait_s=0.05, **FAST)
    assert time.monotonic() - began < 3
    assert len(report.downloaded) == 1 and len(noaa.hits(zip_name(D1))) == 2


def test_a_dropped_connection_resumes_with_a_range_request(noaa, tmp_path):
    noaa.serve(D1)
    noaa.plan = {zip_name(D1): ["drop"]}
    report = download_days(noaa.base_url, D1, D1, tmp_path, **FAST)

    body = noaa.files[zip_name(D1)]
    hits = noaa.hits(zip_name(D1))
    assert [h["range"] for h in hits] == [None, f"bytes={len(body) // 2}-"]
    assert report.downloaded == [tmp_path / zip_name(D1)]
    assert (tmp_path / zip_name(D1)).read_bytes() == body


def test_a_part_file_from_an_earlier_run_is_resumed(noaa, tmp_path):
    noaa.serve(D1)
    body = noaa.files[zip_name(D1)]
    (tmp_path / (zip_name(D1) + ".part")).write_bytes(body[:1000])
    download_days(noaa.base_url, D1, D1, tmp_path, **FAST)

    assert [h["range"] for h in noaa.hits(zip_name(D1))] == ["bytes=1000-"]
    assert (tmp_path / zip_name(D1)).read_bytes() == body


def test_a_server_that_ignores_range_restarts_from_zero(noaa, tmp_path):
    noaa.serve(D1)
    noaa.plan = {zip_name(D1): ["ignore_range"]}
    (tmp_path / (zip_name(D1) + ".part")).write_bytes(b"stale bytes that must not stay in front")
    report = download_days(noaa.base_url, D1, D1, tmp_path, **FAST)

    assert noaa.hits(zip_name(D1))[0]["range"] == "bytes=39-"
    assert report.downloaded == [tmp_path / zip_name(D1)]
    assert (tmp_path / zip_name(D1)).read_bytes() == noaa.files[zip_name(D1)]


def test_an_unpublished_day_is_missing_not_an_error(noaa, tmp_path):
    noaa.serve(D1, D3)
    report = download_days(noaa.base_url, D1, D3, tmp_path, **FAST)

    assert report.missing == [D2]
    assert report.failed == {}
    assert sorted(report.files) == [D1, D3]
    assert len(noaa.hits(zip_name(D2))) == 1  # a 404 is an answer, not something to retry
    assert "missing 1 (2024-01-16)" in report.summary


def test_a_wrong_content_md5_is_retried_then_accepted(noaa, tmp_path):
    noaa.serve(D1)
    noaa.plan = {zip_name(D1): ["bad_md5"]}
    report = download_days(noaa.base_url, D1, D1, tmp_path, **FAST)

    assert len(noaa.hits(zip_name(D1))) == 2
    assert (tmp_path / zip_name(D1)).read_bytes() == noaa.files[zip_name(D1)]
    assert report.failed == {}


def test_a_checksum_that_never_matches_fails_with_a_reason(noaa, tmp_path):
    noaa.serve(D1, D2)
    noaa.plan = {zip_name(D1): ["bad_md5"] * 10}
    report = download_days(noaa.base_url, D1, D2, tmp_path, retries=2, **FAST)

    assert list(report.failed) == [D1]
    assert "Content-MD5 mismatch" in report.failed[D1] and "after 3 attempts" in report.failed[D1]
    assert len(noaa.hits(zip_name(D1))) == 3
    assert not (tmp_path / zip_name(D1)).exists() and not (tmp_path / (zip_name(D1) + ".part")).exists()
    assert report.downloaded == [tmp_path / zip_name(D2)]  # one bad day does not stop the others
    assert zip_name(D1) not in json.loads((tmp_path / MANIFEST_NAME).read_text())


def test_an_md5_etag_is_checked_and_any_other_etag_ignored(noaa, tmp_path):
    noaa.serve(D1)
    noaa.etag = '"' + "0" * 32 + '"'
    failed = download_days(noaa.base_url, D1, D1, tmp_path / "a", retries=1, **FAST)
    assert "ETag md5 mismatch" in failed.failed[D1]

    noaa.etag = '"' + hashlib.md5(noaa.files[zip_name(D1)]).hexdigest() + '"'
    assert download_days(noaa.base_url, D1, D1, tmp_path / "b", **FAST).failed == {}
    noaa.etag = '"5f-61a2b3c4d5e6f"'  # Apache-style inode-size-mtime: says nothing about content
    assert download_days(noaa.base_url, D1, D1, tmp_path / "c", **FAST).failed == {}


def test_a_body_that_is_not_a_zip_fails(noaa, tmp_path):
    noaa.files[zip_name(D1)] = b"<html>maintenance</html>"
    report = download_days(noaa.base_url, D1, D1, tmp_path, retries=1, **FAST)
    assert report.failed[D1].startswith("not a zip file")
    assert not list(tmp_path.glob("AIS_*"))


def test_ingested_and_already_downloaded_days_are_skipped_without_a_request(noaa, tmp_path):
    noaa.serve(D1, D2, D3)
    download_days(noaa.base_url, D1, D1, tmp_path, **FAST)
    before = len(noaa.requests)

    report = download_days(noaa.base_url, D1, D3, tmp_path, already_ingested=[D2], **FAST)

    assert report.skipped == [D1, D2]
    assert report.downloaded == [tmp_path / zip_name(D3)]
    assert [r["name"] for r in noaa.requests[before:]] == [zip_name(D3)]
    assert sorted(report.files) == [D1, D3]  # D2 was ingested: nothing for the ingest step to read


def test_a_corrupted_final_file_is_downloaded_again(noaa, tmp_path):
    noaa.serve(D1)
    download_days(noaa.base_url, D1, D1, tmp_path, **FAST)
    path = tmp_path / zip_name(D1)
    path.write_bytes(b"\0" * path.stat().st_size)  # same size, different bytes

    report = download_days(noaa.base_url, D1, D1, tmp_path, **FAST)

    assert report.downloaded == [path] and report.skipped == []
    assert len(noaa.hits(zip_name(D1))) == 2
    assert path.read_bytes() == noaa.files[zip_name(D1)]


def test_credentials_in_base_url_are_sent_but_never_logged_or_stored(noaa, tmp_path, caplog):
    noaa.serve(D1, D2)
    noaa.plan = {zip_name(D1): ["500", "drop"], zip_name(D2): ["bad_md5"] * 10}
    base = noaa.base_url.replace("http://", "http://tide-user:s3cr%2Ft@")
    caplog.set_level(logging.DEBUG)

    report = download_days(base, D1, D3, tmp_path, retries=2, **FAST)

    assert report.downloaded == [tmp_path / zip_name(D1)] and report.missing == [D3] and D2 in report.failed
    expected = "Basic " + base64.b64encode(b"tide-user:s3cr/t").decode()
    assert {r["authorization"] for r in noaa.requests} == {expected}
    manifest_text = (tmp_path / MANIFEST_NAME).read_text()
    assert json.loads(manifest_text)[zip_name(D1)]["url"].startswith("http://***@127.0.0.1:")
    for text in (caplog.text, manifest_text, report.summary, *report.failed.values()):
        assert "s3cr" not in text and "tide-user" not in text
    assert "***@127.0.0.1" in caplog.text


def test_bad_arguments_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="after end"):
        download_days("http://127.0.0.1:9/x", D2, D1, tmp_path)
    with pytest.raises(ConfigError, match="http"):
        download_days("ftp://user:pw@127.0.0.1/x", D1, D1, tmp_path)


def test_summary_is_one_line_with_reasons():
    report = DownloadReport(skipped=[D1], missing=[D2], failed={D3: "HTTP 503 (after 5 attempts)"})
    assert report.summary == (
        "downloaded 0, skipped 1, missing 1 (2024-01-16), failed 1 (2024-01-17: HTTP 503 (after 5 attempts))"
    )


def _zip_with(members: dict[str, str], path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def test_open_zip_csv_extracts_the_single_csv(tmp_path):
    path = tmp_path / zip_name(D1)
    path.write_bytes(day_zip(D1, rows=5))
    csv_path = open_zip_csv(path, tmp_path / "csv")
    assert csv_path == tmp_path / "csv" / "AIS_2024_01_15.csv"
    assert csv_path.read_text().splitlines()[0] == ",".join(NOAA_HEADER)
    assert len(csv_path.read_text().splitlines()) == 6
    assert not list((tmp_path / "csv").glob("*.part"))


def test_open_zip_csv_keeps_a_path_traversal_member_inside_dest_dir(tmp_path):
    path = _zip_with({"../../escape.csv": "MMSI\n1\n", "readme.txt": "x"}, tmp_path / "evil.zip")
    dest = tmp_path / "deep" / "csv"
    assert open_zip_csv(path, dest) == dest / "escape.csv"
    assert not (tmp_path / "escape.csv").exists() and not (tmp_path / "deep" / "escape.csv").exists()


def test_open_zip_csv_rejects_zero_or_several_csvs_and_non_zips(tmp_path):
    two = _zip_with({"a.csv": "x\n", "dir/b.csv": "y\n"}, tmp_path / "two.zip")
    with pytest.raises(InputError, match="exactly one .csv, found 2"):
        open_zip_csv(two, tmp_path / "out")
    none = _zip_with({"notes.txt": "x"}, tmp_path / "none.zip")
    with pytest.raises(InputError, match="found 0"):
        open_zip_csv(none, tmp_path / "out")
    (tmp_path / "html.zip").write_text("<html>")
    with pytest.raises(InputError, match="not a readable zip"):
        open_zip_csv(tmp_path / "html.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
