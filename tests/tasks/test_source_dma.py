"""DMA aisdk CSV adapter: the real 10-row sample, hand-made exports, and random junk."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.errors import InputError
from tasks.sources.dma import DMA_COLUMNS, check_dma_csv, read_dma_csv
from tasks.sources.raw import RAW_COLUMNS, create_raw_table
from tasks.ingest import type_rows
from tasks.stage import apply_track_rules, rows_with_reasons

DMA_SAMPLE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ais"
    / "dma_aisdk_2018-02-08_format_sample_10rows.csv"
)
NEW_COLUMNS = list(DMA_COLUMNS) + ["A", "B", "C", "D"]
# defaults for staging SQL parameters (the values tasks/config.py ships with)
STAGING_PARAMS = {"max_implied_speed_kn": 60.0}


def dma_row(**overrides: str) -> dict[str, str]:
    row = {
        "# Timestamp": "08/02/2018 00:00:00", "Type of mobile": "Class A", "MMSI": "219000001",
        "Latitude": "55.676100", "Longitude": "12.568300", "Navigational status": "Under way using engine",
        "ROT": "0.0", "SOG": "10.5", "COG": "90.0", "Heading": "91.0", "IMO": "9123456", "Callsign": " OXAB2 ",
        "Name": "DANA ", "Ship type": "Cargo", "Cargo type": "Category X", "Width": "", "Length": "",
        "Type of position fixing device": "GPS", "Draught": "7.5", "Destination": "AARHUS", "ETA": "",
        "Data source type": "AIS", "A": "100", "B": "20", "C": "8", "D": "12",
    }
    row.update(overrides)
    return row


def write_dma_csv(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None,
                  index: bool = False, extra_lines: dict[int, bytes] | None = None) -> Path:
    """Write a DMA export (optionally with pandas' unnamed index column; .gz by suffix);
    extra_lines: raw bytes inserted before data row i."""
    columns = columns or NEW_COLUMNS
    lines = [",".join(([""] if index else []) + columns).encode() + b"\n"]
    for i, row in enumerate(rows):
        if extra_lines and i in extra_lines:
            lines.append(extra_lines[i] + b"\n")
        fields = ([str(i)] if index else []) + [row.get(c, "") for c in columns]
        lines.append(_csv_line(fields).encode("utf-8"))
    data = b"".join(lines)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _csv_line(fields: list[str]) -> str:
    out = io.StringIO()
    # a bare carriage return is a line break to CSV readers; csv.writer only quotes it when asked
    quoting = csv.QUOTE_ALL if any("\r" in f for f in fields) else csv.QUOTE_MINIMAL
    csv.writer(out, lineterminator="\n", quoting=quoting).writerow(fields)
    return out.getvalue()


def raw_rows(con, table="raw_ais") -> list[dict]:
    cur = con.execute(f'select * from "{table}" order by source_row')
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def staged(con) -> list[dict]:
    """Every raw row through the real staging SQL (row rules, then track rules), with its reason."""
    type_rows(con)
    apply_track_rules(con, STAGING_PARAMS["max_implied_speed_kn"])
    rel = rows_with_reasons(con)
    return [dict(zip(rel.columns, r)) for r in rel.fetchall()]


def test_real_dma_sample(tmp_path):
    if not DMA_SAMPLE.is_file():
        pytest.skip(f"DMA sample {DMA_SAMPLE} is absent (see shared/data/ais/SOURCES.md section 3)")
    with open(DMA_SAMPLE, newline="") as fh:
        expected = list(csv.DictReader(fh))
    con = duckdb.connect()
    result = read_dma_csv(DMA_SAMPLE, con)
    assert (result.rows_in, result.loaded, result.quarantine, result.unmapped) == (10, 10, [], {})
    rows = raw_rows(con)
    assert [r["source_row"] for r in rows] == list(range(1, 11))
    assert {r["source_file"] for r in rows} == {str(DMA_SAMPLE)}
    assert [r["MMSI"] for r in rows] == [e["MMSI"] for e in expected]
    assert [(r["LAT"], r["LON"]) for r in rows] == [(e["Latitude"], e["Longitude"]) for e in expected]
    assert rows[0]["BaseDateTime"] == "2018-02-08T00:00:00" and rows[-1]["BaseDateTime"] == "2018-02-08T00:00:02"
    assert all(re.fullmatch(r"2018-02-08T00:00:0[0-2]", r["BaseDateTime"]) for r in rows)
    assert [r["Status"] for r in rows] == ["0", "1", "0", "9", "15", "0", "7", "0", "15", "0"]
    assert {r["TransceiverClass"] for r in rows} == {"A"}
    # "Unknown" IMO, empty names, "Undefined" ship type, text cargo type: all NULL
    assert all(r[c] is None for r in rows for c in ("IMO", "VesselName", "CallSign", "VesselType", "Cargo", "Length"))
    assert [r["SOG"] for r in rows] == [e["SOG"] for e in expected]
    assert [r["ROT"] for r in rows] == [e["ROT"] for e in expected]

    out = staged(con)
    assert len(out) == 10
    assert all(r["reject_reason"] is None for r in out)
    assert [r["mmsi"] for r in out] == [int(e["MMSI"]) for e in expected]
    assert str(out[0]["ts"]) == "2018-02-08 00:00:00"


def test_new_export_without_index_maps_every_field(tmp_path):
    rows = [
        dma_row(),
        dma_row(**{"MMSI": "219000002", "Length": "150", "Width": "25", "Ship type": "Tanker",
                   "Navigational status": "Moored", "IMO": "Unknown", "Callsign": "Unknown", "Name": "",
                   "Type of mobile": "Class B", "Destination": "unknown"}),
        dma_row(**{"MMSI": "219000003", "A": "", "Ship type": "Undefined", "Navigational status": "Unknown value",
                   "IMO": "IMO0012345", "Heading": ""}),
    ]
    path = write_dma_csv(tmp_path / "aisdk-2024-01-15.csv", rows)
    con = duckdb.connect()
    result = read_dma_csv(path, con)
    assert (result.rows_in, result.loaded, result.quarantine) == (3, 3, [])
    first, second, third = raw_rows(con)
    assert first == {
        "source_row": 1, "source_file": str(path), "MMSI": "219000001", "BaseDateTime": "2018-02-08T00:00:00",
        "LAT": "55.676100", "LON": "12.568300", "SOG": "10.5", "COG": "90.0", "Heading": "91.0",
        "VesselName": "DANA", "IMO": "IMO9123456", "CallSign": "OXAB2", "VesselType": "70", "Status": "0",
        "Length": "120.0", "Width": "20.0", "Draft": "7.5", "Cargo": None, "TransceiverClass": "A",
        "ROT": "0.0", "Destination": "AARHUS",
    }
    assert (second["Length"], second["Width"], second["VesselType"], second["Status"]) == ("150", "25", "80", "5")
    assert (second["IMO"], second["CallSign"], second["VesselName"], second["Destination"]) == (None, None, None, None)
    assert second["TransceiverClass"] == "B"
    # A missing: no length from the antenna offsets, width still C + D
    assert (third["Length"], third["Width"], third["VesselType"], third["Status"]) == (None, "20.0", None, "15")
    assert (third["IMO"], third["Heading"]) == ("IMO0012345", None)
    out = staged(con)
    assert [r["reject_reason"] for r in out] == [None, None, None]
    assert [r["vessel_type"] for r in out][:2] == [70, 80]


def test_gzip_and_source_row_continues(tmp_path):
    plain = write_dma_csv(tmp_path / "a.csv", [dma_row(), dma_row(MMSI="219000002")], columns=list(DMA_COLUMNS),
                          index=True)
    packed = write_dma_csv(tmp_path / "b.csv.gz", [dma_row(MMSI="219000003")])
    con = duckdb.connect()
    create_raw_table(con)
    assert read_dma_csv(plain, con).loaded == 2
    result = read_dma_csv(packed, con)
    assert (result.rows_in, result.loaded) == (1, 1)
    rows = raw_rows(con)
    assert [(r["source_row"], r["MMSI"], r["source_file"]) for r in rows] == [
        (1, "219000001", str(plain)), (2, "219000002", str(plain)), (3, "219000003", str(packed))]
    assert rows[0]["Length"] is None  # 22-column export: no A,B,C,D to fall back on


def test_non_vessels_and_malformed_lines_are_quarantined(tmp_path):
    rows = [
        dma_row(),
        dma_row(**{"Type of mobile": "Base Station", "MMSI": "2190047", "Navigational status": "Unknown value"}),
        dma_row(MMSI="219000003"),
        dma_row(**{"Type of mobile": "AtoN", "MMSI": "992191234"}),
        dma_row(MMSI="219000005"),
    ]
    extra = {2: b"08/02/2018 00:00:01,Class A,219000099,55.1", 4: b"\xff\xfe" + b",x" * 25}
    path = write_dma_csv(tmp_path / "d.csv", rows, extra_lines=extra)
    con = duckdb.connect()
    result = read_dma_csv(path, con)
    assert result.rows_in == 7
    assert result.loaded == 3 and result.loaded + len(result.quarantine) == result.rows_in
    assert [r["MMSI"] for r in raw_rows(con)] == ["219000001", "219000003", "219000005"]
    scratch = con.execute("select table_name from duckdb_tables() where starts_with(table_name, '_dma_')").fetchall()
    assert scratch == []  # the adapter's scratch tables (file rows, DuckDB rejects) are dropped
    by_reason = {}
    for q in result.quarantine:
        assert q["stage"] == "ingest"
        by_reason.setdefault(q["reason"], []).append(q)
    assert sorted(by_reason) == ["malformed_csv_row", "not_a_vessel"]
    base, aton = by_reason["not_a_vessel"]
    assert (base["mmsi"], aton["mmsi"]) == ("2190047", "992191234")
    payload = json.loads(base["payload"])
    assert payload["row"]["Type of mobile"] == "Base Station" and payload["row"]["# Timestamp"] == "08/02/2018 00:00:00"
    short, binary = by_reason["malformed_csv_row"]
    assert json.loads(short["payload"])["csv_line"] == "08/02/2018 00:00:01,Class A,219000099,55.1"
    assert short["mmsi"] == "219000099" and short["record_id"] == "d.csv:line:4"
    assert "line" in json.loads(binary["payload"])


def test_unparseable_timestamp_is_kept_for_staging_and_unknown_status_counted(tmp_path):
    rows = [
        dma_row(**{"# Timestamp": "2018-13-45 99:99"}),
        dma_row(**{"MMSI": "219000002", "Navigational status": "Drifting sideways", "Ship type": "Submarine"}),
        dma_row(**{"MMSI": "219000003", "Navigational status": "unknown value", "IMO": "12345678901"}),
        dma_row(**{"MMSI": "219000004", "Navigational status": "5", "Ship type": "99"}),  # numbers pass through
        dma_row(**{"MMSI": "219000005", "Navigational status": "16", "Ship type": "100"}),  # out of range
    ]
    path = write_dma_csv(tmp_path / "t.csv", rows)
    con = duckdb.connect()
    result = read_dma_csv(path, con)
    assert (result.rows_in, result.loaded, result.quarantine) == (5, 5, [])
    first, second, third, fourth, fifth = raw_rows(con)
    assert first["BaseDateTime"] == "2018-13-45 99:99"
    assert (second["Status"], second["VesselType"], third["Status"], third["IMO"]) == (None, None, "15", None)
    assert (fourth["Status"], fourth["VesselType"], fifth["Status"], fifth["VesselType"]) == ("5", "99", None, None)
    assert result.unmapped == {"Navigational status": {"Drifting sideways": 1, "16": 1},
                               "Ship type": {"Submarine": 1, "100": 1}, "IMO": {"12345678901": 1}}
    reasons = [r["reject_reason"] for r in staged(con)]
    assert reasons == ["unparseable_timestamp", None, None, None, None]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "does not exist"),
        (lambda p: (p.write_text(""), p)[1], "is empty"),
        (lambda p: (p.write_text("a,b,c\n1,2,3\n"), p)[1],
         "lacks DMA aisdk columns # Timestamp,MMSI,Latitude,Longitude"),
        (lambda p: (p.write_text(",# Timestamp,MMSI,Latitude,SOG\n0,08/02/2018 00:00:00,1,2,3\n"), p)[1],
         "lacks DMA aisdk columns Longitude"),
        (lambda p: (p.write_text(",".join(DMA_COLUMNS) + "\n"), p)[1], "no data rows"),
        (lambda p: (p.write_bytes(b"not gzip"), p.rename(p.with_suffix(".csv.gz")))[1], "cannot be read"),
    ],
)
def test_check_dma_csv_errors(tmp_path, make, message):
    path = make(tmp_path / "x.csv")
    with pytest.raises(InputError, match=re.escape(message)) as err:
        check_dma_csv(path)
    assert "\n" not in str(err.value)
    if "lacks" in message:
        assert "# Timestamp,Type of mobile,MMSI" in str(err.value)  # the expected header is named


def test_check_dma_csv_accepts_sample_header(tmp_path):
    header = check_dma_csv(write_dma_csv(tmp_path / "s.csv", [dma_row()], columns=list(DMA_COLUMNS), index=True))
    assert header[0] == "" and header[1:] == list(DMA_COLUMNS)


junk = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
field_values = {
    "# Timestamp": st.one_of(st.just("08/02/2018 00:00:00"), junk),
    "Type of mobile": st.sampled_from(["Class A", "Class B", "Base Station", "AtoN", "", "SAR airborne"]) | junk,
    "MMSI": st.integers(0, 999_999_999).map(str) | junk,
    "Latitude": st.floats(-95, 95).map(lambda f: f"{f:.6f}") | junk,
    "Longitude": st.floats(-185, 185).map(lambda f: f"{f:.6f}") | junk,
    "Navigational status": st.sampled_from(["Moored", "At anchor", "Unknown value", ""]) | junk,
    "Ship type": st.sampled_from(["Cargo", "Tanker", "Undefined", ""]) | junk,
    "IMO": st.sampled_from(["Unknown", "9123456", ""]) | junk,
}


@st.composite
def dma_files(draw):
    columns = draw(st.sampled_from([list(DMA_COLUMNS), NEW_COLUMNS]))
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        row = {c: draw(junk) for c in columns if draw(st.booleans())}
        row.update({c: draw(s) for c, s in field_values.items()})
        rows.append(row)
    # unquoted lines of the wrong width (no quotes or line breaks, so each is exactly one bad line)
    bad = st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='",\x00'),
                           max_size=6), min_size=1, max_size=8)
    extra = {i: ",".join(f).encode() + b",x" for i, f in
             draw(st.dictionaries(st.integers(0, len(rows) - 1), bad, max_size=2)).items()}
    return columns, rows, extra, draw(st.booleans()), draw(st.booleans())


@pytest.fixture(scope="module")
def shared_con():
    con = duckdb.connect()  # one connection for every example: connecting costs more than reading
    yield con
    con.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dma_files())
def test_random_dma_rows_never_lose_a_row(tmp_path, shared_con, case):
    columns, rows, extra, index, gz = case
    path = write_dma_csv(tmp_path / ("r.csv.gz" if gz else "r.csv"), rows, columns=columns, index=index,
                         extra_lines=extra)
    con = shared_con
    con.execute("drop table if exists raw_ais")
    result = read_dma_csv(path, con)
    assert result.rows_in == len(rows) + len(extra)
    assert result.loaded + len(result.quarantine) == result.rows_in
    assert con.execute("select count(*) from raw_ais").fetchone()[0] == result.loaded
    assert {q["reason"] for q in result.quarantine} <= {"not_a_vessel", "malformed_csv_row"}
    assert sum(q["reason"] == "malformed_csv_row" for q in result.quarantine) == len(extra)
    names = [d[0] for d in con.execute("select * from raw_ais limit 0").description]
    assert names == ["source_row", "source_file", *RAW_COLUMNS]
    statuses = {r[0] for r in con.execute('select "Status" from raw_ais').fetchall()}
    assert statuses <= {None, *map(str, range(16))}
