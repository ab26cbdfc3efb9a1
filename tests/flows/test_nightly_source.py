"""The nightly source wiring: download NOAA daily zips from a loopback server, skip stored days."""

from __future__ import annotations

import logging
import threading
import zipfile
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flows.refresh import download_new_days, stored_days
from tasks.config import load_config
from tasks.errors import InputError
from tasks.ingest import ingest_files
from tasks.stage import stage_positions
from tests.conftest import noaa_row, write_noaa_csv


@pytest.fixture
def noaa_server(tmp_path):
    served = {}
    for day in ("15", "16"):
        csv = write_noaa_csv(tmp_path / "srv" / f"AIS_2024_01_{day}.csv",
                             [noaa_row(ts=f"2024-01-{day}T00:0{i}:00", lat=f"33.70{i}00") for i in range(3)])
        with zipfile.ZipFile(tmp_path / "srv" / f"AIS_2024_01_{day}.zip", "w") as zf:
            zf.write(csv, csv.name)
        served[f"/2024/AIS_2024_01_{day}.zip"] = (tmp_path / "srv" / f"AIS_2024_01_{day}.zip").read_bytes()
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            requests.append(self.path)
            body = served.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", requests
    server.shutdown()
    server.server_close()


def test_download_ingest_then_skip_stored_days(prefect_server, tmp_path, noaa_server):
    url, requests = noaa_server
    cfg = load_config(overrides={
        "run.runs_dir": str(tmp_path / "runs"), "source.kind": "noaa_download", "source.base_url": url,
        "source.start": "2024-01-15", "source.end": "2024-01-17", "source.download_dir": str(tmp_path / "dl"),
    })
    log = logging.getLogger("test")
    files = download_new_days(cfg, log)
    assert [f.name for f in files] == ["AIS_2024_01_15.zip", "AIS_2024_01_16.zip"]  # the 17th is not published
    ingest_files("noaa_csv", files, tmp_path / "w.duckdb")
    stage_positions(tmp_path / "w.duckdb", tmp_path / "staged", store_dir=cfg.store_dir)
    assert stored_days(cfg.store_dir) == {date(2024, 1, 15), date(2024, 1, 16)}

    asked = len(requests)
    with pytest.raises(InputError, match="no new NOAA days"):
        download_new_days(cfg, log)  # both days are stored now: nothing to fetch or ingest
    assert all("2024_01_17" in p for p in requests[asked:])  # only the unpublished day is asked again
