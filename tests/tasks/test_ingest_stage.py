"""Ingest + staging SQL on real DuckDB files: not-available codes, quarantine reasons, bad input."""

from __future__ import annotations

import hashlib
import json

import duckdb
import pandas as pd
import pytest

from tasks.errors import InputError
from tasks.ingest import check_noaa_csv, ingest_files, ingest_noaa_csv
from tasks.stage import stage_positions
from tests.conftest import NOAA_HEADER, noaa_row, write_noaa_csv


def _stage(tmp_path, rows):
    csv_path = write_noaa_csv(tmp_path / "ais.csv", rows)
    ingest_noaa_csv(csv_path, tmp_path / "w.duckdb")
    result = stage_positions(tmp_path / "w.duckdb", tmp_path / "staged")
    return result, pd.read_parquet(result.positions_path), pd.read_parquet(result.quarantine_path)


def test_not_available_codes_become_null(tmp_path):
    rows = [
        noaa_row(ts="2024-01-15T00:00:00", sog="102.3", cog="360.0", heading="511", status="", vtype="0"),
        noaa_row(ts="2024-01-15T00:02:00", sog="12.5", cog="95.5", heading="95", status="15", length="0"),
    ]
    result, staged, _ = _stage(tmp_path, rows)
    assert result.kept == 2
    first, second = staged.sort_values("ts").to_dict("records")
    assert pd.isna(first["sog_kn"]) and pd.isna(first["cog_deg"]) and pd.isna(first["heading_deg"])
    assert pd.isna(first["nav_status"]) and pd.isna(first["vessel_type"])
    assert second["sog_kn"] == 12.5 and second["cog_deg"] == 95.5 and second["heading_deg"] == 95
    assert pd.isna(second["nav_status"]) and pd.isna(second["length_m"])  # 15 = undefined, 0 m = not available


def test_bad_rows_go_to_quarantine_with_reason(tmp_path):
    rows = [
        noaa_row(mmsi="12345678"),                     # 8 digits
        noaa_row(mmsi="999999999"),                    # MID outside 2xx-7xx
        noaa_row(mmsi="366000002", lat="91", lon="181"),
        noaa_row(mmsi="366000003", ts="not a time"),
        noaa_row(mmsi="366000004"),
        noaa_row(mmsi="366000004"),                    # exact duplicate
        noaa_row(mmsi="366000005.0", ts="2024-01-15 00:05:00", vtype="70.0", status="5.0"),  # older vintage
    ]
    result, staged, quarantine = _stage(tmp_path, rows)
    assert result.rejected == {"invalid_mmsi": 2, "position_not_available": 1, "unparseable_timestamp": 1,
                               "duplicate_row": 1}
    assert sorted(staged["mmsi"]) == [366000004, 366000005]
    assert staged.loc[staged.mmsi == 366000005, "nav_status"].item() == 5
    assert len(staged) + len(quarantine) == len(rows)  # nothing lost
    assert set(quarantine["stage"]) == {"stage"}
    row_rule = quarantine[quarantine.reason != "duplicate_row"]
    assert row_rule["payload"].map(lambda p: json.loads(p)["MMSI"]).tolist() == ["12345678", "999999999", "366000002", "366000003"]
    # a track-rule reject parsed cleanly: its payload is the parsed row, and its row_hash (md5 of the
    # raw fields) is the kept copy's
    copy = json.loads(quarantine.loc[quarantine.reason == "duplicate_row", "payload"].item())
    assert copy["row_hash"] == str(staged.loc[staged.mmsi == 366000004, "row_hash"].item()) and copy["mmsi"] == 366000004


def test_sql_reason_column_on_in_memory_duckdb():
    """Column tests straight on the SQL file: one output row per input, reasons from a fixed set."""
    import pandas as pd

    from tasks.sources.raw import append_frame, create_raw_table
    from tasks.sqlfiles import run_sql

    con = duckdb.connect()
    create_raw_table(con)
    rows = [noaa_row(), noaa_row(mmsi="1"), noaa_row(lat="abc")]
    append_frame(con, pd.DataFrame(rows, columns=NOAA_HEADER), "test.csv")
    out = run_sql(con, "stg_typed").df()  # rows come out in the order read
    assert list(out["invalid_reason"].fillna("kept")) == ["kept", "invalid_mmsi", "missing_position"]
    assert out["raw_payload"].isna().tolist() == [True, False, False]  # raw text kept for failing rows only
    assert json.loads(out["raw_payload"][2])["LAT"] == "abc"


def test_conflicts_and_impossible_jumps(tmp_path):
    rows = [
        noaa_row(mmsi="366000001", ts="2024-01-15T00:00:00", lat="33.70000"),
        noaa_row(mmsi="366000001", ts="2024-01-15T00:00:00", lat="34.70000"),   # same second, 60 nm away
        noaa_row(mmsi="366000002", ts="2024-01-15T00:00:00", lat="33.00000"),
        noaa_row(mmsi="366000002", ts="2024-01-15T00:02:00", lat="33.00500"),
        noaa_row(mmsi="366000002", ts="2024-01-15T00:04:00", lat="35.00000"),   # 120 nm in 2 minutes and back
        noaa_row(mmsi="366000002", ts="2024-01-15T00:06:00", lat="33.01500"),
        noaa_row(mmsi="366000002", ts="2024-01-15T00:08:00", lat="33.02000"),
    ]
    result, staged, quarantine = _stage(tmp_path, rows)
    assert result.rejected == {"conflicting_position": 2, "impossible_jump": 1}
    assert sorted(staged["lat"]) == [33.0, 33.005, 33.015, 33.02]


def test_rate_of_turn_not_available_becomes_null():
    import pandas as pd

    from tasks.sources.raw import append_frame, create_raw_table
    from tasks.sqlfiles import run_sql

    con = duckdb.connect()
    create_raw_table(con)
    frame = pd.DataFrame([noaa_row(ts=f"2024-01-15T00:0{i}:00") for i in range(3)], columns=NOAA_HEADER)
    frame["ROT"] = ["-128", "-731.4", "4.5"]
    append_frame(con, frame, "feed.nmea")
    out = run_sql(con, "stg_typed").df()
    assert out["rot_deg_min"].isna().tolist() == [True, True, False]
    assert out["rot_deg_min"].iloc[2] == 4.5


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "does not exist"),
        (lambda p: (p.write_text(""), p)[1], "is empty"),
        (lambda p: (p.write_text("a,b,c\n1,2,3\n"), p)[1], "lacks NOAA MarineCadastre columns"),
        (lambda p: (p.write_text(",".join(NOAA_HEADER) + "\n"), p)[1], "no data rows"),
    ],
)
def test_bad_input_is_one_line_with_a_fix(tmp_path, make, message):
    path = make(tmp_path / "ais.csv")
    with pytest.raises(InputError) as err:
        check_noaa_csv(path)
    text = str(err.value)
    assert message in text and "\n" not in text and str(path) in text


def test_malformed_lines_are_quarantined_not_misread(tmp_path):
    good = [noaa_row(ts=f"2024-01-15T00:{i:02d}:00") for i in range(40)]
    path = tmp_path / "ais.csv"
    with open(path, "wb") as fh:
        fh.write((",".join(NOAA_HEADER) + "\n").encode())
        for r in good[:3]:
            fh.write((",".join(r) + "\n").encode())
        fh.write(b"366000001,2024-01-15T01:00:00,33.7,-118.2,10.0,90.0,90,BAD, NAME,IMO1,WDA,70,0,180,30,9.5,70,A\n")
        fh.write(b"366000001,2024-01-15T01:01:00,33.7\n")
        fh.write(b"366000001,2024-01-15T01:02:00,33.7,-118.2,10.0,90.0,90,\xff\xfeNAME,IMO1,WDA,70,0,180,30,9.5,70,A\n")
        fh.write(b'366000001,2024-01-15T01:03:00,33.7,-118.2,10.0,90.0,90,"QUOTED, NAME",IMO1,WDA,70,0,180,30,9.5,70,A\n')
        for r in good[3:]:
            fh.write((",".join(r) + "\n").encode())
    ingested = ingest_noaa_csv(path, tmp_path / "w.duckdb")
    assert ingested.rows == 44 and ingested.malformed == 3
    result = stage_positions(tmp_path / "w.duckdb", tmp_path / "staged")
    staged = pd.read_parquet(result.positions_path)
    quarantine = pd.read_parquet(result.quarantine_path)
    assert result.rejected["malformed_csv_row"] == 3
    assert "QUOTED, NAME" in set(staged["vessel_name"])          # a quoted comma is data
    assert set(staged["transceiver_class"]) == {"A"} and set(staged["nav_status"].dropna()) == {0}
    assert len(staged) + len(quarantine) == ingested.rows
    bad = quarantine[quarantine.reason == "malformed_csv_row"]
    assert bad["payload"].str.contains("csv_line").all() and bad["stage"].eq("ingest").all()


def test_rows_differing_only_in_which_field_is_empty_are_not_duplicates(tmp_path):
    rows = [noaa_row(sog="", cog="90.0"), noaa_row(sog="90.0", cog="")]
    result, staged, _ = _stage(tmp_path, rows)
    assert result.kept == 2 and staged["row_hash"].is_unique


def test_row_hash_is_the_md5_of_the_raw_fields_kept_as_a_uuid(tmp_path):
    """The raw fields in the raw contract's order, joined by the unit separator (chr 31), an absent
    or empty field as chr 0; its text without dashes is that md5 in hex."""
    row = noaa_row(name=" PADDED NAME ", imo="")
    _, staged, _ = _stage(tmp_path, [row])
    fields = [f or "\x00" for f in row] + ["\x00", "\x00"]  # a NOAA file has no ROT and Destination
    expected = hashlib.md5("\x1f".join(fields).encode()).hexdigest()
    assert staged["row_hash"].map(str).str.replace("-", "").tolist() == [expected]


def test_mid_range_and_null_island(tmp_path):
    rows = [noaa_row(mmsi="200123456"), noaa_row(mmsi="776123456"), noaa_row(mmsi="201123456"),
            noaa_row(mmsi="775123456"), noaa_row(mmsi="366000009", lat="0", lon="0")]
    result, staged, _ = _stage(tmp_path, rows)
    assert sorted(staged["mmsi"]) == [201123456, 775123456]
    assert result.rejected == {"invalid_mmsi": 2, "null_island": 1}


def test_noaa_zip_folder_and_glob_sources(tmp_path):
    import zipfile

    from tasks.ingest import ingest_files, source_files

    day1 = write_noaa_csv(tmp_path / "src" / "AIS_2024_01_15.csv", [noaa_row(ts="2024-01-15T00:00:00")])
    day2 = write_noaa_csv(tmp_path / "build" / "AIS_2024_01_16.csv", [noaa_row(ts="2024-01-16T00:00:00", vtype="95.0"),
                                                                      noaa_row(ts="2024-01-16T00:03:00")])
    with zipfile.ZipFile(tmp_path / "src" / "AIS_2024_01_16.zip", "w") as zf:
        zf.write(day2, "AIS_2024_01_16.csv")
    (tmp_path / "src" / "notes.md").write_text("not data")
    files = source_files("noaa_csv", tmp_path / "src")
    assert [f.name for f in files] == ["AIS_2024_01_15.csv", "AIS_2024_01_16.zip"]
    assert source_files("noaa_csv", tmp_path / "src" / "*.zip") == [tmp_path / "src" / "AIS_2024_01_16.zip"]
    result = ingest_files("noaa_csv", files, tmp_path / "w.duckdb")
    assert result.rows == 3 and result.malformed == 0
    assert result.per_file[str(files[1])]["loaded"] == 2
    staged = stage_positions(tmp_path / "w.duckdb", tmp_path / "staged")
    assert staged.kept == 3
    with pytest.raises(InputError, match="matches no noaa_csv files"):
        source_files("noaa_csv", tmp_path / "src" / "*.parquet")


@pytest.mark.parametrize(("limit", "threads"), [("128MB", 1), ("300MB", 2), ("512 MiB", 4), (None, None)])
def test_a_small_memory_limit_means_fewer_duckdb_threads(tmp_path, limit, threads):
    from tasks.sqlfiles import connect

    with duckdb.connect() as plain:
        default = plain.execute("select current_setting('threads')").fetchall()[0][0]
    with connect(tmp_path / "x.duckdb", limit) as con:
        got = con.execute("select current_setting('threads')").fetchall()[0][0]
    assert got == (default if threads is None else min(threads, default))


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
@pytest.mark.parametrize("gz", [False, True])
def test_a_stray_carriage_return_quarantines_its_line_not_the_file(tmp_path, ending, gz):
    import gzip

    rows = [noaa_row(mmsi=str(366000001 + i), ts=f"2024-01-15T00:0{i}:00") for i in range(7)]
    rows[1][7] = "BARE\rCR"              # file line 3: a carriage return outside quotes
    rows[2][7] = '"QUOTED\rCR"'          # file line 4: inside quotes, a legal CSV field
    rows[4] = rows[4] + ["extra"]        # file line 6: one field too many
    data = ending.join([",".join(NOAA_HEADER).encode()] + [",".join(r).encode() for r in rows]) + ending
    path = tmp_path / ("ais.csv.gz" if gz else "ais.csv")
    path.write_bytes(gzip.compress(data) if gz else data)

    result = ingest_noaa_csv(path, tmp_path / "w.duckdb")

    assert (result.rows, result.malformed) == (7, 2)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        rejects = dict(con.execute("select record_id, payload from ingest_rejects").fetchall())
        names = dict(con.execute("select mmsi, vessel_name from typed_ais").fetchall())
    assert set(rejects) == {f"{path.name}:line:3", f"{path.name}:line:6"}
    assert json.loads(rejects[f"{path.name}:line:3"])["csv_line"].split(",")[7] == "BARE\rCR"
    assert names[366000003] == "QUOTED\rCR" and len(names) == 5


def test_a_carriage_return_inside_the_header_is_a_one_line_error(tmp_path):
    # the header check reads the CR as a line end, so the header lacks the names after it
    path = tmp_path / "ais.csv"
    header = ",".join(NOAA_HEADER).replace("VesselName", "Vessel\rName").encode()
    path.write_bytes(header + b"\n" + ",".join(noaa_row()).encode() + b"\n")
    with pytest.raises(InputError, match="lacks NOAA MarineCadastre columns VesselName,IMO"):
        ingest_noaa_csv(path, tmp_path / "w.duckdb")


def test_the_carriage_return_fallback_touches_only_the_refused_file_and_counts_records_like_duckdb(tmp_path):
    header = ",".join(NOAA_HEADER).encode()

    def row(i: int, name: str = "TEST SHIP") -> bytes:
        r = noaa_row(mmsi=str(366000001 + i), ts=f"2024-01-15T00:{i:02d}:00")
        r[7] = name
        return ",".join(r).encode()

    # a.csv: a quoted name over two lines (record 3 = lines 3-4), a bare CR in record 5 (line 6),
    # one field too many in record 6 (line 7), and a last line ended by a carriage return only
    a = tmp_path / "a.csv"
    a.write_bytes(b"\n".join([header, row(1), row(2, '"TWO\nLINES"'), row(3), row(4, "BARE\rCR"),
                              row(5) + b",extra", row(6)]) + b"\r")
    # b.csv: carriage-return line endings throughout, which DuckDB reads on its own
    b = tmp_path / "b.csv"
    b.write_bytes(b"\r".join([header, row(7), row(8)]) + b"\r")

    result = ingest_files("noaa_csv", [a, b], tmp_path / "w.duckdb")

    assert (result.rows, result.malformed) == (8, 2)
    assert result.per_file[str(b)] == {"rows_in": 2, "loaded": 2, "quarantined": 0}
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        ids = sorted(r[0] for r in con.execute("select record_id from ingest_rejects").fetchall())
        names = dict(con.execute("select mmsi, vessel_name from typed_ais").fetchall())
    assert ids == ["a.csv:line:5", "a.csv:line:6"]
    assert names[366000003] == "TWO\nLINES" and names[366000007] == "TEST SHIP" and 366000008 in names
    assert not (tmp_path / "work" / "cr_free" / "1-b.csv.csv").exists()
