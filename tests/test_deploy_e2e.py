"""A real deployment round trip, the way an operator runs it (issue 8's first check).

A `prefect server start` of its own on loopback (SQLite in tmp_path), a process work pool and a
worker polling it, `prefect deploy` of one deployment from deployments/prefect.yaml with the real
CLI, a run triggered through the API with non-default parameters, then: the run completed, wrote
its run folder where the parameters said, and left its report artifacts on the server.

Not the session test harness of tests/conftest.py: the point is the separate processes (server,
worker, flow-run subprocess) talking over HTTP, and the pull step entering TIDEWRIGHT_HOME.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tasks.config import SimulateConfig
from tests.conftest import REPO

PREFECT = Path(sys.executable).parent / "prefect"
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
DEPLOYMENT = "end-to-end/maritime-ais-end-to-end"
PULL_DIRECTORY = "{{ $TIDEWRIGHT_HOME }}"
RUN_ID = "deploy-e2e"

# The machine may be shared with other test runs: generous, but every wait is bounded.
SERVER_START_S = 180
CLI_S = 180
FLOW_RUN_S = 420


def small_overrides(runs_dir: Path) -> dict[str, Any]:
    """Non-default in every field: a few vessels, a few steps, scores on a handful of items. Nested
    sections, as the UI's form sends them (the server checks them against the parameter schema)."""
    return {
        "run": {"runs_dir": str(runs_dir)},
        "simulate": {"vessels": 8, "hours": 6},
        "generate": {"max_seeds": 60},
        "train": {"max_steps": 2},
        "gate": {"enabled": False},
        "evaluate": {"limit": 4},
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _base_env(api_url: str, prefect_home: Path) -> dict[str, str]:
    """This process's environment (offline flags from tests/conftest.py) with no outside Prefect
    setting or profile, pointed at the test server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "TIDEWRIGHT_HOME"}
    env |= {
        "PATH": f"{PREFECT.parent}{os.pathsep}{env.get('PATH', '')}",
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    return env


def _start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        # own session: teardown signals the whole group, never this pytest process
        return subprocess.Popen(args, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process and every descendant (a flow-run subprocess may sit in a session of its
    own), SIGKILL whatever is left after 20 s, then anything still in the process group."""
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(tree, timeout=20)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _wait_healthy(api_url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        assert server.poll() is None, f"prefect server exited with {server.returncode} before it was healthy"
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{api_url}/health", timeout=3) as response:
                if response.status == 200:
                    return
        time.sleep(1)
    pytest.fail(f"prefect server not healthy at {api_url}/health after {SERVER_START_S} s")


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run([str(PREFECT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=CLI_S)
    assert done.returncode == 0, f"`prefect {' '.join(args)}` exited {done.returncode}:\n{done.stdout}{done.stderr}"


def _tail(path: Path, lines: int = 150) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def prefect_stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Server + cpu-pool + worker; yields the API URL and env; stops both and shows their logs on failure."""
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = _base_env(api_url, tmp_path / "prefect_home")
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}"
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    started: list[subprocess.Popen] = []
    try:
        started.append(_start([str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
                               env, tmp_path, server_log))
        _wait_healthy(api_url, started[0])
        _cli(["work-pool", "create", "--type", "process", "cpu-pool"], env, tmp_path)
        # The worker runs in a folder that is not the checkout, and so does each flow run (a fresh
        # temporary folder): only the deployment's pull step brings the run into TIDEWRIGHT_HOME.
        worker_dir = tmp_path / "worker"
        worker_dir.mkdir()
        worker_env = env | {"TIDEWRIGHT_HOME": str(REPO), "PREFECT_WORKER_QUERY_SECONDS": "2"}
        started.append(_start([str(PREFECT), "worker", "start", "--pool", "cpu-pool", "--limit", "1"],
                              worker_env, worker_dir, worker_log))
        yield {"api_url": api_url, "env": env}
    except BaseException:
        print(f"---- prefect server log (last lines of {server_log}) ----\n{_tail(server_log)}")
        print(f"---- prefect worker + flow run log (last lines of {worker_log}) ----\n{_tail(worker_log, 300)}")
        raise
    finally:
        for proc in reversed(started):
            _stop(proc)


async def _run_deployment(api_url: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """Trigger the deployment, wait for a final state, and read back what the server holds."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    async with PrefectClient(api_url) as client:
        deployment = await client.read_deployment_by_name(DEPLOYMENT)
        flow_run = await client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        deadline = time.monotonic() + FLOW_RUN_S
        while not flow_run.state or not flow_run.state.is_final():
            if time.monotonic() > deadline:
                await client.set_flow_run_state(flow_run.id, _cancelling(), force=True)
                pytest.fail(f"flow run {flow_run.name} still {flow_run.state_name} after {FLOW_RUN_S} s")
            await asyncio.sleep(2)
            flow_run = await client.read_flow_run(flow_run.id)
        # refresh and train-evaluate run as subflows; their artifacts hang on those flow runs
        subflows = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run.id])))
        flow_names = {run.flow_id: (await client.read_flow(run.flow_id)).name for run in subflows}
        run_ids = [flow_run.id, *(run.id for run in subflows)]
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=run_ids)))
        return {
            "deployment": deployment,
            "flow_run": flow_run,
            "subflows": {flow_names[run.flow_id]: run for run in subflows},
            "artifacts": artifacts,
        }


async def _refused(api_url: str, parameters: dict[str, Any]) -> str:
    """The server's answer to a run with bad parameters (it must refuse to create the run)."""
    from prefect.client.orchestration import PrefectClient
    from prefect.exceptions import PrefectHTTPStatusError

    async with PrefectClient(api_url) as client:
        deployment = await client.read_deployment_by_name(DEPLOYMENT)
        try:
            await client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        except PrefectHTTPStatusError as exc:
            return str(exc)
    pytest.fail(f"the server accepted {parameters}")


def _cancelling():
    from prefect.states import Cancelling

    return Cancelling(message="tests/test_deploy_e2e.py: timed out")


@pytest.mark.slow
def test_a_worker_runs_the_deployed_end_to_end_flow_with_its_artifacts(tmp_path):
    runs_dir = tmp_path / "runs"
    overrides = small_overrides(runs_dir)
    # every check inside the stack: a failing one prints the server and worker logs
    with prefect_stack(tmp_path) as stack:
        # from the repository root, as docs/operations.md says; TIDEWRIGHT_HOME unset here, so the
        # deployment keeps the placeholder and each worker fills in its own checkout
        _cli(["--no-prompt", "deploy", "--name", DEPLOYMENT.split("/")[1],
              "--prefect-file", str(PREFECT_FILE.relative_to(REPO))], stack["env"], REPO)
        # the server checks parameters against the flow's schema before a run exists, naming the field
        refused = asyncio.run(_refused(stack["api_url"], {"overrides": {"train": {"max_steps": 0}}}))
        assert "overrides" in refused and "max_steps" in refused and "minimum of 1" in refused, refused
        started = time.monotonic()
        result = asyncio.run(_run_deployment(stack["api_url"], {"overrides": overrides, "run_id": RUN_ID}))
        print(f"deployed end-to-end run final after {time.monotonic() - started:.1f} s (from the trigger)")
        flow_run = result["flow_run"]
        assert flow_run.state.is_completed(), f"flow run ended {flow_run.state_name}: {flow_run.state.message}"

        deployment = result["deployment"]
        assert deployment.work_pool_name == "cpu-pool"
        assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": PULL_DIRECTORY}}]
        declared = {d["name"]: d for d in yaml.safe_load(PREFECT_FILE.read_text())["deployments"]}
        assert deployment.parameters == declared[deployment.name]["parameters"]
        assert flow_run.parameters["overrides"] == overrides and flow_run.parameters["run_id"] == RUN_ID
        assert set(result["subflows"]) == {"refresh", "train-evaluate"}
        assert all(run.state.is_completed() for run in result["subflows"].values())

        # the run folder is where the run's parameters put it, not in the checkout the worker entered
        run = runs_dir / RUN_ID
        for rel in ("dataset/train.jsonl", "dataset/eval.jsonl", "report.md", "eval/results.json"):
            assert (run / rel).is_file(), rel
        assert not (REPO / "runs" / RUN_ID).exists()
        stats = json.loads((run / "stats.json").read_text())
        assert stats["run"]["overrides"] == overrides
        # the simulator adds its invalid-MMSI vessels to the ones asked for
        vessels = overrides["simulate"]["vessels"] + SimulateConfig().invalid_mmsi_vessels
        assert f"{vessels} vessels" in stats["run"]["source"]
        assert 0 < stats["generate"]["generated"] <= overrides["generate"]["max_seeds"]
        assert stats["train"]["steps"] == overrides["train"]["max_steps"] and "gate" not in stats
        results = json.loads((run / "eval" / "results.json").read_text())
        assert results["base"]["n"] == results["tuned"]["n"] == overrides["evaluate"]["limit"]

        artifacts = result["artifacts"]
        by_flow = {name: {(a.key, a.type) for a in artifacts if a.flow_run_id == sub.id}
                   for name, sub in result["subflows"].items()}
        reports = [a for a in artifacts if a.key and a.key.startswith("report-") and a.type == "markdown"]
        assert len(reports) == 1 and (reports[0].key, "markdown") in by_flow["refresh"]
        assert "## Quality gate" in reports[0].data and str(run / "plots" / "funnel.png") in reports[0].data
        evaluation_key = reports[0].key.replace("report-", "evaluation-", 1)
        assert {(evaluation_key, "markdown"), (f"{evaluation_key}-scores", "table")} <= by_flow["train-evaluate"]
        (evaluation,) = [a for a in artifacts if a.key == evaluation_key]
        assert "## Evaluation (lm-eval)" in evaluation.data
