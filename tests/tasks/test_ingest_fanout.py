"""Ingest fanned out over source files: each file decoded by its own Prefect task through the flow's
task runner, loaded in file order into the same typed rows and quarantine as reading the files one
after another; an unchanged file is not decoded again by the next run."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from prefect import flow

from tasks.ingest import ingest_files

SHARED_AIS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ais"
NMEA_LOG = SHARED_AIS / "nmea_dma_aislib_2010-06-11_stream_example.txt"
DMA_CSV = SHARED_AIS / "dma_aisdk_2018-02-08_format_sample_10rows.csv"


@flow
def fanned(kind: str, files: list[str], root: str, run: str) -> dict:
    from flows.refresh import read_files_side_by_side
    from tasks.stagecache import StageRunner

    run_dir = Path(root) / run
    stages = StageRunner(run_dir, Path(root) / "stage_cache")
    parts = read_files_side_by_side(stages, kind, [Path(f) for f in files], run_dir / "work" / "raw_parts")
    result = ingest_files(kind, [Path(f) for f in files], run_dir / "warehouse.duckdb", run_dir / "work", None, parts)
    return {"result": result, "stages": stages.summary()}


def table(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def split_log(tmp: Path) -> list[str]:
    lines = NMEA_LOG.read_bytes().splitlines(keepends=True)
    cut = len(lines) // 2
    while cut < len(lines) and b",2," in lines[cut - 1][:20]:  # keep a multi-part message in one file
        cut += 1
    files = [tmp / "a.nmea", tmp / "b.nmea"]
    files[0].write_bytes(b"".join(lines[:cut]))
    files[1].write_bytes(b"".join(lines[cut:]))
    return [str(f) for f in files]


@pytest.mark.parametrize("kind", ["nmea", "dma_csv"])
def test_files_read_side_by_side_load_the_same_rows_as_one_after_another(prefect_server, tmp_path, kind):
    if kind == "nmea":
        files = split_log(tmp_path)
    else:
        files = [str(tmp_path / "x.csv"), str(tmp_path / "y.csv")]
        for f in files:
            Path(f).write_bytes(DMA_CSV.read_bytes())
    sequential = ingest_files(kind, [Path(f) for f in files], tmp_path / "seq.duckdb", tmp_path / "seqwork")
    out = fanned(kind, files, str(tmp_path), "r1")
    result = out["result"]
    assert (result.rows, result.malformed, result.per_file) == (sequential.rows, sequential.malformed, sequential.per_file)
    assert result.rows > 0
    query = "select * from typed_ais order by all"
    assert table(result.db_path, query) == table(tmp_path / "seq.duckdb", query)
    assert table(result.db_path, "select count(distinct source_row) = count(*) from raw_ais") == [(True,)]
    assert table(result.db_path, "select reason, count(*) from ingest_rejects group by 1 order by 1") == \
        table(tmp_path / "seq.duckdb", "select reason, count(*) from ingest_rejects group by 1 order by 1")
    names = [n for n in out["stages"] if n.startswith("read-")]
    assert names == [f"read-{Path(files[0]).name}", f"read-{Path(files[1]).name}", "read-source-files"]


def test_an_unchanged_file_is_not_decoded_again_when_one_changes_or_one_is_added(prefect_server, tmp_path):
    files = split_log(tmp_path)
    fanned("nmea", files, str(tmp_path), "r1")
    Path(files[1]).write_bytes(Path(files[1]).read_bytes() + b"!AIVDM,1,1,,A,bad,0*00\n")
    second = fanned("nmea", files, str(tmp_path), "r2")["stages"]
    assert second["read-a.nmea"]["reused"] and not second["read-b.nmea"]["reused"]
    assert second["read-source-files"]["note"] == "1 of 2 tasks reused"
    # a new file sorted first: the others keep their tasks (named by file, not position)
    extra = tmp_path / "0.nmea"
    extra.write_bytes(NMEA_LOG.read_bytes()[:2000].rsplit(b"\n", 1)[0] + b"\n")
    out = fanned("nmea", [str(extra), *files], str(tmp_path), "r3")
    third = out["stages"]
    assert not third["read-0.nmea"]["reused"] and third["read-a.nmea"]["reused"] and third["read-b.nmea"]["reused"]
    sequential = ingest_files("nmea", [extra, *map(Path, files)], tmp_path / "seq3.duckdb", tmp_path / "seqwork3")
    assert out["result"].per_file == sequential.per_file
    query = "select * from typed_ais order by all"
    assert table(out["result"].db_path, query) == table(tmp_path / "seq3.duckdb", query)
