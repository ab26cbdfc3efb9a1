"""The command line: mistakes are one line on stderr with exit 2, checked before Prefect starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, noaa_row, write_noaa_csv


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, expect",
    [
        (["refresh", "--config", "no/such.yaml"], "config file no/such.yaml does not exist"),
        (["refresh", "--set", "train.max_stepz=3"], "train.max_stepz: unknown key"),
        (["refresh", "--set", "simulate.vessels=lots"], "simulate.vessels:"),
        (["refresh", "--set", "source.kind=noaa_csv"], "source.path is required"),
        (["refresh", "--set", "source.kind=noaa_csv", "--set", "source.path=/nonexistent/ais.csv"], "does not exist"),
        (["refresh", "--set", "novalue"], "must look like section.key=value"),
        (["refresh", "--run-id", "latest"], "run id 'latest' must be"),
        (["refresh", "--run-id", "a/b"], "run id 'a/b' must be"),
        (["refresh", "--set", "generate.category_shares={port_actvity: 1}"], "unknown categories ['port_actvity']"),
        (["run", "--set", "student.base_model=example-org/not-downloaded"], "not in the Hugging Face cache"),
    ],
)
def test_bad_config_and_input_are_one_line_errors(args, expect):
    out = _cli(*args)
    assert out.returncode == 2
    assert expect in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_wrong_columns_and_empty_file(tmp_path):
    wrong = write_noaa_csv(tmp_path / "wrong.csv", [["1", "2"]], header=["mmsi", "time"])
    out = _cli("refresh", "--set", "source.kind=noaa_csv", "--set", f"source.path={wrong}")
    assert out.returncode == 2 and "lacks NOAA MarineCadastre columns MMSI" in out.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    out = _cli("refresh", "--set", "source.kind=noaa_csv", "--set", f"source.path={empty}")
    assert out.returncode == 2 and "is empty" in out.stderr


def test_an_existing_run_folder_is_not_reused(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "stats.json").write_text("{}")
    out = _cli("refresh", "--run-id", "r1", "--set", f"run.runs_dir={tmp_path}")
    assert out.returncode == 2 and "already exists" in out.stderr


def test_train_eval_without_a_dataset_says_run_refresh_first(tmp_path):
    out = _cli("train-eval", "--run-dir", str(tmp_path))
    assert out.returncode == 2 and "run the refresh flow first" in out.stderr


def test_ports_table_with_wrong_columns(tmp_path):
    ports = tmp_path / "ports.csv"
    ports.write_text("name,lat\nX,1\n")
    write_noaa_csv(tmp_path / "ais.csv", [noaa_row()])
    out = _cli("refresh", "--set", f"ports.path={ports}")
    assert out.returncode == 2 and "ports" in out.stderr.lower() and "Traceback" not in out.stderr


def test_data_too_thin_for_any_question_fails_in_one_line_without_traceback(tmp_path):
    ais = write_noaa_csv(tmp_path / "ais.csv", [noaa_row(mmsi=str(366000001 + i)) for i in range(3)])
    # one report per vessel: enough to ask a vessel's flag or type, too little for any movement question
    out = _cli("refresh", "--set", "source.kind=noaa_csv", "--set", f"source.path={ais}",
               "--set", f"run.runs_dir={tmp_path / 'runs'}", "--set", "generate.category_shares={movement: 1, identity: 0, port_activity: 0, traffic: 0, "
               "anomalies: 0, safety: 0}")
    assert out.returncode == 2
    assert "error: no question can be asked of this data: 3 staged positions from 3 vessels" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_summary_says_what_the_gate_kept_and_how_to_return_the_review(tmp_path):
    import json

    from flows.cli import summary

    (tmp_path / "review").mkdir()
    (tmp_path / "review" / "review_sample.csv").write_text("id\n")
    (tmp_path / "stats.json").write_text(json.dumps({
        "generate": {"generated": 120},
        "publish": {"published": 150, "added": 90, "carried": 60, "parent": "r0", "train_examples": 120, "eval_examples": 30},
        "review_export": {"sampled": 8}}))
    text = summary(tmp_path)
    assert "120 generated -> 90 added + 60 carried from r0; dataset 150 examples (train 120, eval 30)" in text
    assert f"review-import --file {tmp_path / 'review' / 'review_sample.csv'} --run-dir {tmp_path}" in text
