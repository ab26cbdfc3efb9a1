"""Resource faults: a full disk, a read-only output folder, damaged caches and a damaged day-store
partition. Each gives one line naming the path and the fix (or is repaired without a word that
matters), the last good version stays byte for byte, and the next run recovers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tasks.llm.loopback import LoopbackLLM
from tests.faults.runs import assert_one_line_error, fingerprint, parent_of, refresh_cli, small_config


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A real 48 MiB file system (tmpfs) for the runs folder: root can mount one; others skip."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mount("-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk))
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here ({exc}); the full-disk case needs root")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave_bytes: int) -> Path:
    """Fill the file system up to leave_bytes free."""
    free = shutil.disk_usage(disk).free - leave_bytes
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        fh.truncate(0)
        block = b"\0" * (1 << 20)
        while free > 0:
            fh.write(block[:min(free, len(block))])
            free -= len(block)
    return filler


def test_full_then_read_only_disk_fail_in_one_line_keep_the_last_version_and_recover(api_url, small_disk, tmp_path):
    runs = small_disk / "runs"
    config = small_config(tmp_path / "faults.yaml", runs)
    assert refresh_cli(config, "v1", api_url).code == 0
    good = fingerprint(runs / "v1" / "dataset")

    # full: the next run stops where the disk refuses a write, in one line that names the file
    filler = fill(small_disk, 64 << 10)
    full = refresh_cli(config, "v2", api_url, "run.reuse_stages=false")
    line = assert_one_line_error(full, "No space left on device", "free space", str(small_disk))
    assert fingerprint(runs / "v1" / "dataset") == good, line
    assert not (runs / "v2" / "dataset").exists()

    filler.unlink()
    assert refresh_cli(config, "v3", api_url).code == 0
    assert parent_of(runs / "v3") == "v1"

    # read-only: refused before any work, naming the folder and the fix
    mount("-o", "remount,ro", str(small_disk))
    try:
        read_only = refresh_cli(config, "v4", api_url)
        assert_one_line_error(read_only, "Read-only file system", "writable folder", str(runs))
    finally:
        mount("-o", "remount,rw", str(small_disk))
    assert fingerprint(runs / "v1" / "dataset") == good
    assert refresh_cli(config, "v5", api_url).code == 0
    assert parent_of(runs / "v5") == "v3"


def test_damaged_caches_are_set_aside_and_rebuilt(api_url, tmp_path):
    runs = tmp_path / "runs"
    key_env = {"TW_FAULTS_OPENAI_KEY": "sk-test-PLANTED-faults-1d2e"}
    with LoopbackLLM() as srv:
        config = small_config(tmp_path / "llm.yaml", runs, teacher={
            "teachers": [{"name": "gpt", "kind": "openai", "model": "gpt-4o", "base_url": srv.openai_base_url,
                          "api_key_env": "TW_FAULTS_OPENAI_KEY", "share": 1.0, "concurrency": 2}],
            "corrupt_share": 0.0})
        assert refresh_cli(config, "first", api_url, env=key_env).code == 0
        asked = len(srv.requests)
        assert asked > 0
        first = pd.read_parquet(runs / "first" / "dataset" / "examples.parquet")

        # damaged teacher and embedding caches; the stage results that would spare opening them garbled
        # (Prefect's pickled result of generation and of dedup), and a stage-cache blob cut short
        (runs / "teacher_cache.sqlite").write_bytes(b"not a database" * 100)
        (runs / "embedding_cache.sqlite").write_bytes((runs / "embedding_cache.sqlite").read_bytes()[:2048])
        for stage in ("generate-gpt", "dedup-semantic"):
            for result in (runs / "stage_cache" / "results").glob(f"{stage}*"):
                result.write_text("{garbled")
        blob = max((p for p in (runs / "stage_cache" / "blobs").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        blob.write_bytes(blob.read_bytes()[:100])
        srv.reset()
        again = refresh_cli(config, "again", api_url, "publish.lineage=faults-again", env=key_env)
        assert again.code == 0, again.output[-4000:]
        for what in ("teacher response cache", "embedding cache"):
            assert f"{what} {runs}" in again.output and "was damaged" in again.output, what
        assert again.output.count("its cached result could not be read") == 2
        assert "does not match its digest; ran again" in again.output
        assert len(list(runs.glob("teacher_cache.sqlite.damaged-*"))) == 1
        assert len(list(runs.glob("embedding_cache.sqlite.damaged-*"))) == 1
        assert len(srv.requests) == asked  # the lost answers were asked again, once each

    second = pd.read_parquet(runs / "again" / "dataset" / "examples.parquet")
    cols = ["id", "question", "answer", "split"]
    pd.testing.assert_frame_equal(second[cols].sort_values("id").reset_index(drop=True),
                                  first[cols].sort_values("id").reset_index(drop=True))


def test_damaged_day_partition_is_one_line_naming_it_and_the_next_run_recovers(api_url, tmp_path):
    runs = tmp_path / "runs"
    sim = small_config(tmp_path / "sim.yaml", runs)
    assert refresh_cli(sim, "simulated", api_url).code == 0
    csv = runs / "simulated" / "source" / "ais.csv"
    feed = small_config(tmp_path / "feed.yaml", runs, source={"kind": "noaa_csv", "path": str(csv)})
    assert refresh_cli(feed, "day1", api_url).code == 0
    good = fingerprint(runs / "day1" / "dataset")
    partition = next((runs / "_warehouse" / "positions").glob("date=*/data.parquet"))
    partition.write_bytes(partition.read_bytes()[: partition.stat().st_size // 2])

    damaged = refresh_cli(feed, "day1-again", api_url)
    assert_one_line_error(damaged, str(partition.parent))
    assert fingerprint(runs / "day1" / "dataset") == good
    shutil.rmtree(partition.parent)  # what the message says to do: the day is re-ingested from its file
    assert refresh_cli(feed, "day1-recovered", api_url).code == 0
