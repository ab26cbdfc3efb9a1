"""Property tests: hostile NOAA CSV lines never crash ingest; each bad line lands in quarantine
with a reason and each good row is staged unchanged."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.ingest import ingest_files
from tasks.stage import stage_positions
from tests.conftest import NOAA_HEADER, noaa_row

GOOD = "good"
BAD_KINDS = {
    "too_many_fields": "malformed_csv_row",
    "too_few_fields": "malformed_csv_row",
    "not_utf8": "malformed_csv_row",
    "junk_latitude": "missing_position",
    "invalid_mmsi": "invalid_mmsi",
    "junk_time": "unparseable_timestamp",
    "position_91_181": "position_not_available",
}


def _line(kind: str, i: int, junk: str) -> bytes:
    # junk stays inside one field of one line: CR/LF would end the record, quotes and commas
    # would change the field count on purpose only where a case says so
    junk = "".join(ch for ch in junk if ch not in '\r\n",')
    # every row has its own vessel, so the track rules (conflicts, jumps) never apply here
    row = noaa_row(mmsi=str(366100000 + i), ts=f"2024-01-15T{i // 60 % 24:02d}:{i % 60:02d}:00",
                   lat=f"{30 + (i % 1000) / 100:.5f}", lon=f"{-120 + (i % 700) / 100:.5f}")
    if kind == "too_many_fields":
        row = row + ["x" + junk]
    elif kind == "too_few_fields":
        row = row[: 3 + len(junk) % 10]
    elif kind == "junk_latitude":
        row[2] = "lat?" + junk
    elif kind == "invalid_mmsi":
        row[0] = "12345678"
    elif kind == "junk_time":
        row[1] = "15/01/2024 " + str(i)
    elif kind == "position_91_181":
        row[2], row[3] = "91", "181"
    text = ",".join(row).encode()
    if kind == "not_utf8":
        text = text.replace(b"TEST SHIP", b"TEST \xff\xfe SHIP")
    return text + b"\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([GOOD] * 3 + list(BAD_KINDS)), st.text(max_size=12)), min_size=1, max_size=40))
def test_hostile_lines_are_quarantined_and_good_rows_kept(lines):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "ais.csv"
        with open(path, "wb") as fh:
            fh.write((",".join(NOAA_HEADER) + "\n").encode())
            for i, (kind, junk) in enumerate(lines):
                fh.write(_line(kind, i, junk))
        ingested = ingest_files("noaa_csv", [path], tmp / "w.duckdb")
        staged = stage_positions(tmp / "w.duckdb", tmp / "staged")
        kept = pd.read_parquet(staged.positions_path)
        quarantine = pd.read_parquet(staged.quarantine_path)

        assert ingested.rows == len(lines)
        assert len(kept) + len(quarantine) == len(lines)
        good = {366100000 + i for i, (kind, _) in enumerate(lines) if kind == GOOD}
        assert set(kept["mmsi"]) == good
        for row in kept.itertuples():
            i = row.mmsi - 366100000
            assert row.lat == round(30 + (i % 1000) / 100, 5) and row.sog_kn == 10.0 and row.vessel_name == "TEST SHIP"
        expected = sorted(BAD_KINDS[kind] for kind, _ in lines if kind != GOOD)
        assert sorted(quarantine["reason"]) == expected
