"""Concurrency: two refreshes of one dataset line started together never interleave their writes (the
second fails fast naming the lock and the running run); the lock waits a bounded time, dies with its
holder, and a published version is never seen half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tasks.artifacts import write_jsonl
from tasks.config import SplitConfig
from tasks.errors import RunLockedError
from tasks.publish import publish_dataset
from tasks.versions import DatasetLineLock, latest_version, read_examples
from tests.faults.runs import fingerprint, parent_of, refresh_cli, small_config


def test_two_refreshes_of_one_line_started_together_one_fails_fast_and_the_version_stays_whole(api_url, tmp_path):
    runs = tmp_path / "runs"
    config = small_config(tmp_path / "line.yaml", runs)
    with ThreadPoolExecutor(2) as pool:
        nightly, manual = pool.map(lambda run_id: refresh_cli(config, run_id, api_url), ["nightly", "manual"])
    outcomes = {"nightly": nightly, "manual": manual}
    winners = [r for r, run in outcomes.items() if run.code == 0]
    assert len(winners) == 1, {r: run.output[-2000:] for r, run in outcomes.items()}
    winner, loser = winners[0], ({"nightly", "manual"} - set(winners)).pop()
    lines = outcomes[loser].error_lines
    assert outcomes[loser].code == 2 and len(lines) == 1 and "Traceback" not in outcomes[loser].output, outcomes[loser].output
    assert f"run {winner} (pid" in lines[0] and str(runs / ".locks" / "faults.lock") in lines[0], lines[0]
    assert not (runs / loser).exists()  # it stopped before making its run folder
    fingerprint(runs / winner / "dataset")
    assert latest_version(runs, "faults") == runs / winner / "dataset"
    assert (runs / ".locks" / "faults.lock").read_text() == ""  # released: it names nobody

    again = refresh_cli(config, loser, api_url)
    assert again.code == 0, again.output[-3000:]
    assert parent_of(runs / loser) == winner


def test_the_lock_waits_a_bounded_time_and_names_its_holder(tmp_path):
    holder = DatasetLineLock(tmp_path, "ais").acquire()
    holder.claim("nightly-0200")
    started = time.monotonic()
    with pytest.raises(RunLockedError, match=r"dataset line ais is in use by the refresh run nightly-0200 \(pid \d+ .*after waiting 0.3 s; lock .*ais\.lock"):
        DatasetLineLock(tmp_path, "ais").acquire(wait_s=0.3, poll_s=0.05)
    assert 0.3 <= time.monotonic() - started < 2
    threading.Timer(0.3, holder.release).start()
    with DatasetLineLock(tmp_path, "ais").acquire(wait_s=10, poll_s=0.05) as waited:
        assert waited.path.exists()
    DatasetLineLock(tmp_path, "other-line").acquire().release()  # another line is never blocked


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    script = ("import sys, time; from tasks.versions import DatasetLineLock; "
              "lock = DatasetLineLock(sys.argv[1], 'ais').acquire(); lock.claim('killed-run'); print('held', flush=True); "
              "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=Path(__file__).resolve().parents[2],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(RunLockedError, match=f"run killed-run \\(pid {proc.pid} "):
        DatasetLineLock(tmp_path, "ais").acquire()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    DatasetLineLock(tmp_path, "ais").acquire().release()  # the kernel dropped the dead holder's lock


def test_readers_never_see_a_half_written_version(api_url, tmp_path):
    runs = tmp_path / "runs"
    assert refresh_cli(small_config(tmp_path / "v.yaml", runs), "v1", api_url).code == 0
    examples = read_examples(runs / "v1" / "dataset")
    halves = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    write_jsonl(examples, halves[0])
    write_jsonl(examples[: len(examples) // 2], halves[1])
    dataset = tmp_path / "republished" / "dataset"
    publish_dataset(halves[0], [], SplitConfig(), dataset)
    stop, seen, problems = threading.Event(), [], []

    def read_versions() -> None:
        while not stop.is_set():
            try:
                # a folder opened once is one version, whatever is renamed meanwhile
                fd = os.open(dataset, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue  # between two versions: no version, never half of one
            try:
                manifest = json.loads(open(os.path.join(f"/proc/self/fd/{fd}", "manifest.json")).read())
                train = open(os.path.join(f"/proc/self/fd/{fd}", "train.jsonl")).read().splitlines()
                evals = open(os.path.join(f"/proc/self/fd/{fd}", "eval.jsonl")).read().splitlines()
                if (len(train), len(evals)) != (manifest["splits"]["train"], manifest["splits"]["eval"]):
                    problems.append(manifest["splits"])
                seen.append(manifest["examples"])
            except FileNotFoundError:
                pass  # the version was replaced and removed while being read
            finally:
                os.close(fd)

    reader = threading.Thread(target=read_versions)
    reader.start()
    for n in range(12):
        publish_dataset(halves[n % 2], [], SplitConfig(), dataset)
    stop.set()
    reader.join()
    assert problems == []
    assert len(set(seen)) == 2, seen  # both versions were read, whole


def test_a_review_import_waits_for_the_refresh_holding_its_line(api_url, tmp_path, monkeypatch):
    from flows.review import review_import

    monkeypatch.setenv("PREFECT_API_URL", api_url)
    runs = tmp_path / "runs"
    dataset = runs / "v1" / "dataset"
    dataset.mkdir(parents=True)
    manifest = json.dumps({"version": {"lineage": "faults", "run_id": "v1"}, "examples": 0})
    (dataset / "manifest.json").write_text(manifest)
    for split in ("train", "eval"):
        (dataset / f"{split}.jsonl").write_text("")
    decisions = tmp_path / "review_sample.csv"
    decisions.write_text("id,decision\n")
    config = small_config(tmp_path / "r.yaml", runs, run={"lock_wait_s": 0.2})
    holder = DatasetLineLock(runs, "faults").acquire()
    holder.claim("nightly-0200")
    try:
        with pytest.raises(RunLockedError, match=r"dataset line faults is in use by the refresh run nightly-0200 .*after waiting 0.2 s"):
            review_import(decisions=str(decisions), config=str(config), run_dir=str(runs / "v1"))
    finally:
        holder.release()
    assert (dataset / "manifest.json").read_text() == manifest
    # and the import names itself to a refresh that comes while it holds the line
    with DatasetLineLock(runs, "faults").acquire() as lock:
        lock.claim("v1", activity="review import into")
        with pytest.raises(RunLockedError, match=r"in use by the review import into run v1 \(pid"):
            DatasetLineLock(runs, "faults").acquire()
