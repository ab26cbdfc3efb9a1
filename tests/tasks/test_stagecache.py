"""The stage cache on small stages: reuse by content, not path; a corrupt or missing blob, an
incomplete result or reuse switched off runs the stage again; what cannot be keyed is an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow

from tasks.config import DedupConfig
from tasks.stagecache import StageCacheError, StageRunner, reroot

CALLS: list[str] = []


def shout(text_path: Path, cfg: DedupConfig, out_path: Path, cache_path: Path | None = None) -> dict:
    CALLS.append(text_path.read_text())
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text_path.read_text().upper() + f" {cfg.threshold}")
    return {"out": out_path, "complete": "partial" not in text_path.read_text()}


@flow
def one_run(root: str, run: str, text: str, threshold: float = 0.9, reuse: bool = True, outside: bool = False) -> dict:
    run_dir = Path(root) / run
    src = run_dir / "in" / "text.txt"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(text)
    stages = StageRunner(run_dir, Path(root) / "stage_cache", reuse=reuse)
    out = (Path(root) / "shared" / "out.txt") if outside else run_dir / "work" / "out.txt"
    value = stages.run("shout", shout, src, DedupConfig(threshold=threshold), out, Path(root) / f"{run}.sqlite",
                       outputs=("out_path",), ignore=("cache_path",), complete=lambda v: v["complete"])
    return {"value": value, "record": stages.summary()["shout"], "text": out.read_text()}


@pytest.fixture
def root(prefect_server, tmp_path):
    CALLS.clear()
    return str(tmp_path)


def test_same_content_in_another_folder_is_reused_and_its_files_restored(root):
    first = one_run(root, "a", "hello")
    second = one_run(root, "b", "hello")
    assert CALLS == ["hello"]
    assert second["record"]["reused"] and second["record"]["from_run"] == "a"
    assert second["text"] == "HELLO 0.9"
    assert second["value"]["out"] == Path(root) / "b" / "work" / "out.txt"  # rerooted into the new run
    assert first["record"]["key"] == second["record"]["key"]


def test_changed_input_or_config_runs_again(root):
    one_run(root, "a", "hello")
    one_run(root, "b", "hello!")
    third = one_run(root, "c", "hello", threshold=0.95)
    assert CALLS == ["hello", "hello!", "hello"]
    assert third["text"] == "HELLO 0.95" and not third["record"]["reused"]


def test_corrupt_or_missing_blob_runs_the_stage_again(root):
    one_run(root, "a", "hello")
    blobs = [p for p in (Path(root) / "stage_cache" / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 1
    blobs[0].write_text("tampered")
    second = one_run(root, "b", "hello")
    assert CALLS == ["hello", "hello"] and second["text"] == "HELLO 0.9"
    assert "does not match its digest" in second["record"]["note"]
    assert one_run(root, "c", "hello")["record"]["reused"] and CALLS == ["hello"] * 2  # the rerun stored a good copy
    blobs[0].unlink()
    fourth = one_run(root, "d", "hello")
    assert CALLS == ["hello"] * 3 and "missing" in fourth["record"]["note"]
    assert one_run(root, "e", "hello")["record"]["reused"] and CALLS == ["hello"] * 3


def test_incomplete_result_and_reuse_off_run_again(root):
    one_run(root, "a", "partial")
    second = one_run(root, "b", "partial")
    assert CALLS == ["partial", "partial"] and "incomplete" in second["record"]["note"]
    one_run(root, "c", "done")
    fourth = one_run(root, "d", "done", reuse=False)
    assert CALLS == ["partial", "partial", "done", "done"] and not fourth["record"]["reused"]


def test_an_output_outside_the_run_folder_is_never_reused(root):
    one_run(root, "a", "hello", outside=True)
    second = one_run(root, "b", "hello", outside=True)
    assert CALLS == ["hello", "hello"] and second["record"]["key"] is None
    assert not list((Path(root) / "stage_cache").rglob("blobs/*/*"))  # nothing stored that nothing could reuse


def test_an_argument_that_cannot_be_keyed_is_an_error(root):
    @flow
    def bad(root: str) -> None:
        StageRunner(Path(root) / "r", Path(root) / "stage_cache").run(
            "bad", shout, Path(root) / "t.txt", object(), Path(root) / "r" / "o.txt", outputs=("out_path",))

    with pytest.raises(StageCacheError, match=r"bad.cfg of type object cannot be keyed"):
        bad(root)


def test_reroot_moves_paths_and_path_strings_only_under_the_old_folder():
    old, new = Path("/runs/a"), Path("/runs/b")
    value = {"p": old / "x", "s": "/runs/a/y", "other": "/runs/ab/z", "n": [Path("/elsewhere")], str(old / "k"): 1}
    assert reroot(value, old, new) == {"p": new / "x", "s": "/runs/b/y", "other": "/runs/ab/z", "n": [Path("/elsewhere")],
                                       "/runs/b/k": 1}


def _cache_files(root: str) -> list[Path]:
    return sorted(p for p in (Path(root) / "stage_cache").rglob("*") if p.is_file())


def test_pruning_drops_the_entries_used_longest_ago_and_a_pruned_stage_just_runs_again(root):
    import os
    import time

    from tasks.stagecache import prune_stage_cache

    one_run(root, "a", "alpha")             # entry A
    one_run(root, "b", "bravo")             # entry B
    for path in _cache_files(root):         # both written a day ago
        os.utime(path, (time.time() - 86400, time.time() - 86400))
    assert one_run(root, "c", "alpha")["record"]["reused"]  # A used again now: its files are touched
    cache = Path(root) / "stage_cache"
    total = sum(p.stat().st_size for p in _cache_files(root))
    a_entry = [p for p in _cache_files(root) if p.stat().st_mtime > time.time() - 3600]
    assert len(a_entry) == 3  # A's key record, result and blob

    # a limit that holds A alone: B (used longest ago) goes, its stage entry and its blob
    a_size = sum(p.stat().st_size for p in a_entry)
    pruned = prune_stage_cache(cache, max_bytes=a_size, used_since=time.time() - 3600)
    assert pruned["entries_removed"] == 2 and pruned["bytes_before"] == total  # B's stage entry and its blob
    assert _cache_files(root) == sorted(a_entry)
    # below what the run used: nothing it used this time is deleted
    assert prune_stage_cache(cache, max_bytes=1, used_since=time.time() - 3600)["entries_removed"] == 0
    assert _cache_files(root) == sorted(a_entry)

    CALLS.clear()
    assert not one_run(root, "d", "bravo")["record"]["reused"] and CALLS == ["bravo"]  # pruned: runs again
    assert one_run(root, "e", "alpha")["record"]["reused"] and CALLS == ["bravo"]
    # a blob pruned under a result that stays (another run's budget) is a miss that repairs itself
    assert prune_stage_cache(cache, max_bytes=0, used_since=time.time() + 60)["bytes_after"] == 0
    assert not one_run(root, "f", "alpha")["record"]["reused"]


def test_a_rerun_that_writes_an_existing_blob_marks_it_used(root):
    import os
    import time

    from tasks.stagecache import prune_stage_cache

    one_run(root, "a", "alpha")
    for path in _cache_files(root):
        os.utime(path, (time.time() - 86400, time.time() - 86400))
    started = time.time() - 1
    one_run(root, "b", "alpha", reuse=False)  # runs again: same bytes, the blob already stored
    prune_stage_cache(Path(root) / "stage_cache", max_bytes=1, used_since=started)
    assert one_run(root, "c", "alpha")["record"]["reused"]  # its result and blob both survived
