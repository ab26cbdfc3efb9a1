"""Day-partitioned parquet store: idempotent re-ingest, a new day touches only its partition."""

from __future__ import annotations

import hashlib

import duckdb

from tasks.catalogue.base import read_positions
from tasks.ingest import ingest_files
from tasks.stage import stage_positions
from tests.conftest import noaa_row, write_noaa_csv


def _day(day: str, mmsi: str, n: int = 5) -> list[list[str]]:
    return [noaa_row(mmsi=mmsi, ts=f"{day}T00:{i * 2:02d}:00", lat=f"{33.7 + i * 0.001:.5f}") for i in range(n)]


def _stage(tmp_path, name, files, store):
    ingest_files("noaa_csv", files, tmp_path / name / "w.duckdb")
    return stage_positions(tmp_path / name / "w.duckdb", tmp_path / name / "staged", store_dir=store)


def _count(path) -> int:
    return duckdb.sql(f"select count(*) from read_parquet('{path}')").fetchall()[0][0]


def test_reingesting_a_day_is_idempotent_and_days_stay_apart(tmp_path):
    store = tmp_path / "store"
    a = write_noaa_csv(tmp_path / "a.csv", _day("2024-01-15", "366000001"))
    first = _stage(tmp_path, "r1", [a], store)
    assert first.days == ["2024-01-15"]
    part15 = store / "positions" / "date=2024-01-15" / "data.parquet"
    assert _count(part15) == 5

    again = _stage(tmp_path, "r2", [a], store)          # the same file again: no duplicate rows
    assert again.days == ["2024-01-15"] and _count(part15) == 5
    before = part15.read_bytes()

    b = write_noaa_csv(tmp_path / "b.csv", _day("2024-01-16", "366000002"))
    _stage(tmp_path, "r3", [b], store)                  # a new day: its own partition only
    assert part15.read_bytes() == before
    assert _count(store / "positions" / "date=2024-01-16" / "data.parquet") == 5

    c = write_noaa_csv(tmp_path / "c.csv", _day("2024-01-15", "366000003", n=3))
    merged = _stage(tmp_path, "r4", [c], store)         # more rows for a stored day: merged, not replaced
    assert _count(part15) == 8
    assert merged.kept == 3  # this ingest's rows; facts then see the whole day
    hive = duckdb.sql(f"select date, count(*) from read_parquet('{store}/positions/*/*.parquet', hive_partitioning = true) "
                      "group by date order by date").fetchall()
    assert [(str(d), n) for d, n in hive] == [("2024-01-15", 8), ("2024-01-16", 5)]
    assert not list((store / "positions").glob(".*"))  # no half-written partition left behind
    # each run's staged/positions/ is a snapshot of the days it touched: a later merge does not change it
    assert _count(f"{first.positions_path}/*/*.parquet") == 5
    assert _count(f"{merged.positions_path}/*/*.parquet") == 8


def test_a_day_stored_with_row_hash_as_md5_text_merges_without_duplicates(tmp_path):
    """Stores written before row_hash became a UUID hold it as 32 hex characters: re-ingesting such
    a day still recognises every stored row (no duplicates) and the merged day holds UUIDs only."""
    store = tmp_path / "store"
    a = write_noaa_csv(tmp_path / "a.csv", _day("2024-01-15", "366000001"))
    _stage(tmp_path, "r1", [a], store)
    part15 = store / "positions" / "date=2024-01-15" / "data.parquet"
    old = tmp_path / "old.parquet"  # the day as the earlier version wrote it
    duckdb.sql(f"copy (select * replace (replace(cast(row_hash as varchar), '-', '') as row_hash) "
               f"from read_parquet('{part15}')) to '{old}' (format parquet)")
    old.replace(part15)
    assert duckdb.sql(f"select typeof(row_hash) from read_parquet('{part15}') limit 1").fetchall() == [("VARCHAR",)]

    b = write_noaa_csv(tmp_path / "b.csv", _day("2024-01-15", "366000001") + _day("2024-01-15", "366000002", n=2))
    _stage(tmp_path, "r2", [b], store)
    assert _count(part15) == 7  # the 5 stored rows once, plus the 2 new ones
    assert duckdb.sql(f"select distinct typeof(row_hash) from read_parquet('{part15}')").fetchall() == [("UUID",)]
    expected = duckdb.sql(f"select count(distinct row_hash) from read_parquet('{part15}')").fetchall()[0][0]
    assert expected == 7


def test_the_catalogue_reads_row_hash_as_the_md5_hex_from_uuid_and_from_text(tmp_path):
    """read_positions gives row_hash as 32 hex characters whether the day files hold a UUID (read
    over several files, so over several chunks) or the md5 text of a store from before the UUID."""
    for day, n in (("2024-01-15", 3), ("2024-01-16", 2)):
        (tmp_path / "uuid" / f"date={day}").mkdir(parents=True)
        duckdb.sql(f"copy (select i as mmsi, cast(md5('{day}' || i) as uuid) as row_hash from range({n}) t(i)) "
                   f"to '{tmp_path}/uuid/date={day}/data.parquet' (format parquet)")
    got = read_positions(tmp_path / "uuid", ["mmsi", "row_hash"])
    expected = [hashlib.md5(f"{day}{i}".encode()).hexdigest() for day, n in (("2024-01-15", 3), ("2024-01-16", 2))
                for i in range(n)]
    assert sorted(got["row_hash"]) == sorted(expected)
    duckdb.sql(f"copy (select 1 as mmsi, md5('x') as row_hash) to '{tmp_path}/text.parquet' (format parquet)")
    assert read_positions(tmp_path / "text.parquet", ["mmsi", "row_hash"])["row_hash"].tolist() == [hashlib.md5(b"x").hexdigest()]
