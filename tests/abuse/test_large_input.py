"""Large input (issue 10 item 7): a NOAA CSV of about 300 MB must be ingested in a subprocess whose
peak memory stays far below the file's size (it does not yet: the test is a strict xfail with the
measured figure), and a fleet ten times the config's is refreshed with one override, nothing else
changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tasks.config import SimulateConfig
from tasks.ports import load_ports
from tasks.simulate import simulate
from tests.conftest import REPO

TARGET_BYTES = 300 * 2**20
MEMORY_LIMIT = "128MB"
INGEST = """
import sys
from pathlib import Path
from tasks.ingest import ingest_files
result = ingest_files("noaa_csv", [Path(sys.argv[1])], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
print(result.rows, result.malformed)
"""


def big_csv(tmp: Path) -> tuple[Path, int]:
    """The simulated day repeated under other MMSIs (same MID, a new vessel number per copy) until
    the file holds TARGET_BYTES: real rows, so ingest types and checks every one."""
    sim = simulate(SimulateConfig(vessels=30, hours=24, seed=2), load_ports(None), tmp / "sim")
    header, *lines = sim.csv_path.read_text().splitlines()
    body = [line.split(",", 1) for line in lines]
    path, rows, copy = tmp / "big.csv", 0, 0
    with open(path, "w") as fh:
        fh.write(header + "\n")
        while fh.tell() < TARGET_BYTES:
            shift = copy * 1000
            fh.write("".join(f"{int(mmsi) + shift if len(mmsi) == 9 else mmsi},{rest}\n" for mmsi, rest in body))
            rows += len(body)
            copy += 1
    return path, rows


@pytest.mark.xfail(strict=True, reason="measured: peak RSS 1,209 MiB for a 300 MiB CSV at stage.duckdb_memory_limit "
                   "128MB (tasks/ingest.py + tasks/sources/noaa.py do not bound memory); see the issue-10 R2 report")
def test_a_300_mb_csv_is_ingested_with_memory_far_below_its_size(tmp_path):
    path, rows = big_csv(tmp_path)
    size = path.stat().st_size
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", INGEST, str(path), str(tmp_path / "w.duckdb"), str(tmp_path / "work"),
                             MEMORY_LIMIT], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    assert os.waitstatus_to_exitcode(status) == 0, stderr[-2000:]
    loaded, malformed = map(int, stdout.strip().splitlines()[-1].split())
    assert loaded == rows and malformed == 0
    peak = usage.ru_maxrss * 1024  # Linux reports kilobytes
    print(f"file {size / 2**20:.0f} MiB, {rows} rows, ingest {seconds:.1f} s, peak RSS {peak / 2**20:.0f} MiB")
    assert peak < size / 2, f"peak RSS {peak / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB file"


def test_a_fleet_ten_times_the_configs_runs_with_one_override(prefect_server, tmp_path):
    from prefect.settings import PREFECT_API_URL

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"run": {"runs_dir": str(tmp_path / "runs")}, "simulate": {"vessels": 6, "hours": 6},
                                      "generate": {"max_seeds": 30}, "teacher": {"corrupt_share": 0.0}}))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    stats = {}
    for run_id, extra in (("fleet", []), ("fleet10x", ["--set", "simulate.vessels=60"])):
        out = subprocess.run([sys.executable, "-m", "flows.cli", "refresh", "--config", str(config), "--run-id", run_id, *extra],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        stats[run_id] = json.loads((tmp_path / "runs" / run_id / "stats.json").read_text())
    small, large = stats["fleet"], stats["fleet10x"]
    assert large["run"]["overrides"] == {"simulate": {"vessels": 60}}
    assert "60 vessels" in large["run"]["source"] or "62 vessels" in large["run"]["source"]
    # the 2 invalid-MMSI extras (simulate.invalid_mmsi_vessels) do not grow with the fleet: 8 -> 62 vessels
    assert large["ingest"]["rows"] > 6 * small["ingest"]["rows"]
    assert large["publish"]["published"] > 0 and large["publish"]["train_vessels"] > small["publish"]["train_vessels"]
