"""Refreshes through the command line (`python -m flows.cli refresh`) for the fault tests, and the
checks they share: a one-line error, a version left exactly as it was."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.faults.crash import REPO


@dataclass
class CliRun:
    code: int
    output: str  # stdout and stderr together

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("error: ")]


def small_config(path: Path, runs: Path, **sections: dict) -> Path:
    """A 6-vessel simulated refresh with the offline template teacher, plus the given sections."""
    config = {"run": {"runs_dir": str(runs)}, "publish": {"lineage": "faults"},
              "simulate": {"vessels": 6, "hours": 12}, "generate": {"max_seeds": 20}, **sections}
    path.write_text(yaml.safe_dump(config))
    return path


def refresh_cli(config: Path, run_id: str, api_url: str, *overrides: str, env: dict | None = None,
                timeout_s: float = 300) -> CliRun:
    argv = [sys.executable, "-m", "flows.cli", "refresh", "--config", str(config), "--run-id", run_id]
    for item in overrides:
        argv += ["--set", item]
    proc = subprocess.run(argv, cwd=REPO, env={**os.environ, "PREFECT_API_URL": api_url, **(env or {})},
                          capture_output=True, text=True, timeout=timeout_s)
    return CliRun(proc.returncode, proc.stdout + proc.stderr)


def fingerprint(dataset_dir: Path) -> dict[str, str]:
    """sha256 of every file of a published version (and the manifest's own list must match it)."""
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(dataset_dir.iterdir()) if p.is_file()}
    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    assert {k: v for k, v in files.items() if k != "manifest.json"} == manifest["files"], dataset_dir
    return files


def assert_one_line_error(run: CliRun, *words: str) -> str:
    """Exit 2, exactly one `error:` line holding every word, and no traceback anywhere in the output."""
    assert run.code == 2, run.output[-4000:]
    assert "Traceback" not in run.output, run.output[-4000:]
    assert len(run.error_lines) == 1, run.output[-4000:]
    line = run.error_lines[0]
    for word in words:
        assert word in line, line
    return line


def parent_of(run_dir: Path) -> str | None:
    return json.loads((run_dir / "dataset" / "manifest.json").read_text())["version"]["parent"]
