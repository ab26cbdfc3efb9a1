"""Shared fixtures: offline environment, tiny NOAA CSV writer, one Prefect test server per session."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from tasks.sources.raw import NOAA_COLUMNS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
NOAA_SAMPLE = SHARED_DATA / "ais" / "noaa_marinecadastre_AIS_2022-01-03_first99999.csv.gz"

NOAA_HEADER = list(NOAA_COLUMNS)


def noaa_row(mmsi="366000001", ts="2024-01-15T00:00:00", lat="33.70000", lon="-118.20000", sog="10.0", cog="90.0",
             heading="90", name="TEST SHIP", imo="IMO9000001", call="WDA1234", vtype="70", status="0",
             length="180", width="30", draft="9.5", cargo="70", cls="A") -> list[str]:
    return [mmsi, ts, lat, lon, sog, cog, heading, name, imo, call, vtype, status, length, width, draft, cargo, cls]


def row_hash(label: str) -> str:
    """A row_hash (a UUID, as staging writes it) for a hand-made row: the label's bytes, zero-padded
    to 16, so hashes sort as their labels do (queries break ties of equal times on row_hash)."""
    raw = label.encode()
    assert len(raw) <= 16, f"row_hash label {label!r} is longer than 16 bytes"
    return raw.hex().ljust(32, "0")


def write_noaa_csv(path: Path, rows: list[list[str]], header: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header or NOAA_HEADER)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def prefect_server():
    """One real (temporary, SQLite-backed) Prefect server for every flow test in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
