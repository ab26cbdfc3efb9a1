"""deployments/prefect.yaml, docker-compose.yml and the Dockerfile agree with the code and each other.

Static checks: no network, no Docker, no Prefect server. tests/test_deploy_e2e.py deploys from the
same file to a real Prefect server with a process worker and runs a deployment on every test run.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PREFECT_FILE = ROOT / "deployments" / "prefect.yaml"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"

SECRET_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
WORKER_SERVICES = ("worker", "gpu-worker")

PROJECT = yaml.safe_load(PREFECT_FILE.read_text())
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
DEPLOYMENTS = PROJECT["deployments"]
BY_NAME = {d["name"]: d for d in DEPLOYMENTS}
SCHEDULES = [(d["name"], s) for d in DEPLOYMENTS for s in d.get("schedules") or []]

per_deployment = pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])


def _flow_function(entrypoint: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    """The module-level function an entrypoint names; skips if the flow file is not written yet."""
    rel_path, func_name = entrypoint.split(":")
    path = ROOT / rel_path
    if not path.is_file():
        pytest.skip(f"{rel_path} does not exist yet (flow not written); entrypoint {entrypoint} unchecked")
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == func_name:
            return node
    pytest.fail(f"{entrypoint}: no module-level function {func_name!r} in {rel_path}")


def _flow_decorator(func: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.expr | None:
    for dec in func.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if (isinstance(target, ast.Name) and target.id == "flow") or (
            isinstance(target, ast.Attribute) and target.attr == "flow"
        ):
            return dec
    return None


def _flow_name(func: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The name Prefect gives the flow: `@flow(name=...)` if a literal, else the function name
    with underscores turned into hyphens (Prefect's default)."""
    dec = _flow_decorator(func)
    if isinstance(dec, ast.Call):
        for kw in dec.keywords:
            if kw.arg == "name" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                return kw.value.value
    return func.name.replace("_", "-")


def _environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def _worker_pool(service: dict[str, Any]) -> str:
    command = service["command"]
    command = command.split() if isinstance(command, str) else command
    assert command[:3] == ["prefect", "worker", "start"], command
    for flag in ("--pool", "-p"):
        if flag in command:
            return command[command.index(flag) + 1]
    raise AssertionError(f"worker command names no --pool: {command}")


def _dockerfile_instruction(name: str) -> list[str]:
    return [
        line.split(None, 1)[1].strip()
        for line in DOCKERFILE.read_text().splitlines()
        if line.upper().startswith(name + " ")
    ]


# ---- prefect.yaml -------------------------------------------------------------------------------


def test_project_file_pins_the_locked_prefect_version():
    locked = re.search(r"^prefect==(\S+)$", (ROOT / "requirements.lock").read_text(), re.MULTILINE)
    assert PROJECT["name"] == "tidewright"
    assert locked, "requirements.lock does not pin prefect"
    assert str(PROJECT["prefect-version"]) == locked.group(1)


def test_prefect_accepts_the_project_file():
    # `prefect deploy` does not fail on a malformed prefect.yaml: it prints a warning and
    # deploys nothing. Validate with the same model it uses.
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(PROJECT)
    assert [d.name for d in model.deployments] == list(BY_NAME)
    assert len(BY_NAME) == len(DEPLOYMENTS), "deployment names must be unique"


def test_pull_step_enters_tidewright_home_which_the_image_sets_to_its_workdir():
    # the placeholder is filled from the worker's environment when a run starts, so one deployment
    # serves the image (/app) and a checkout outside Docker; tests/test_deploy_e2e.py runs it
    steps = PROJECT["pull"]
    directories = [
        step["prefect.deployments.steps.set_working_directory"]["directory"]
        for step in steps
        if "prefect.deployments.steps.set_working_directory" in step
    ]
    assert directories == ["{{ $TIDEWRIGHT_HOME }}"]
    # ENV instructions as Docker reads them: backslash-continued lines joined, KEY=value pairs
    instructions = re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines()
    image_env = dict(
        pair.split("=", 1)
        for line in instructions
        if line.upper().startswith("ENV ")
        for pair in shlex.split(line.split(None, 1)[1])
    )
    assert image_env.get("TIDEWRIGHT_HOME") == _dockerfile_instruction("WORKDIR")[-1], "the image must set TIDEWRIGHT_HOME"


@per_deployment
def test_entrypoint_is_a_flow_function(deployment):
    func = _flow_function(deployment["entrypoint"])
    assert _flow_decorator(func) is not None, f"{deployment['entrypoint']} is not decorated with @flow"


@per_deployment
def test_parameters_match_the_flow_signature(deployment):
    func = _flow_function(deployment["entrypoint"])
    args = func.args
    positional = args.posonlyargs + args.args
    names = {a.arg for a in positional + args.kwonlyargs}
    required = {a.arg for a in positional[: len(positional) - len(args.defaults)]} | {
        a.arg for a, default in zip(args.kwonlyargs, args.kw_defaults) if default is None
    }
    given = set(deployment.get("parameters") or {})
    assert given <= names, f"parameters the flow does not take: {sorted(given - names)}"
    assert required <= given, f"required flow parameters missing: {sorted(required - given)}"


@per_deployment
def test_config_parameter_points_at_a_pipeline_config(deployment):
    config = (deployment.get("parameters") or {}).get("config")
    assert config, "every deployment names its pipeline config explicitly"
    assert (ROOT / config).is_file(), f"{config} does not exist"


@pytest.mark.parametrize("deployment_name,schedule", SCHEDULES, ids=[name for name, _ in SCHEDULES])
def test_schedule_is_a_valid_cron(deployment_name, schedule):
    from prefect.client.schemas.schedules import CronSchedule

    assert set(schedule) <= {"cron", "timezone", "active", "day_or"}, schedule
    CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])


def test_only_manual_deployments_are_unscheduled():
    unscheduled = {d["name"] for d in DEPLOYMENTS if not d.get("schedules")}
    assert unscheduled == {d["name"] for d in DEPLOYMENTS if "manual" in d.get("tags", [])}


@per_deployment
def test_work_pool_has_a_worker_in_compose(deployment):
    pools = {_worker_pool(COMPOSE["services"][name]) for name in WORKER_SERVICES}
    assert deployment["work_pool"]["name"] in pools


# ---- docker-compose.yml -------------------------------------------------------------------------


def test_compose_has_the_four_services():
    services = COMPOSE["services"]
    assert set(services) == {"postgres", "prefect-server", "worker", "gpu-worker"}
    assert services["gpu-worker"].get("profiles") == ["gpu"]
    assert all("profiles" not in services[name] for name in ("postgres", "prefect-server", "worker"))
    devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_prefect_server_uses_postgres():
    services = COMPOSE["services"]
    server = services["prefect-server"]
    url = _environment(server)["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://")
    assert re.search(r"@postgres:5432/", url), url
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]
    for name in WORKER_SERVICES:
        assert _environment(services[name])["PREFECT_API_URL"] == "http://prefect-server:4200/api"


def test_secrets_are_passed_through_not_written():
    passthrough = re.compile(r"^\$\{(?P<var>[A-Z_]+)(:?-)?\}$")
    for name, service in COMPOSE["services"].items():
        env = _environment(service)
        for var in SECRET_VARS:
            value = env.get(var)
            if value is None:
                continue
            match = passthrough.match(str(value))
            assert match and match.group("var") == var, f"{name}: {var} has a literal value"
    postgres_password = _environment(COMPOSE["services"]["postgres"])["POSTGRES_PASSWORD"]
    assert str(postgres_password).startswith("${POSTGRES_PASSWORD"), "the password must be overridable"
    assert not re.search(r"\bsk-[A-Za-z0-9_-]{16,}", COMPOSE_FILE.read_text()), "API key literal in compose file"


def test_workers_share_the_runs_volume_the_image_declares():
    # train/evaluate on the GPU worker reads runs/latest written by refresh on the CPU worker.
    (volume,) = _dockerfile_instruction("VOLUME")
    runs_path = re.sub(r'[\[\]"]', "", volume).strip()
    mounts = [set(COMPOSE["services"][name]["volumes"]) for name in WORKER_SERVICES]
    shared = set.intersection(*mounts)
    assert any(m.split(":")[1] == runs_path and m.split(":")[0] in COMPOSE["volumes"] for m in shared), mounts


# ---- docs ---------------------------------------------------------------------------------------


def test_documented_run_commands_name_real_deployments():
    commands = re.findall(r"prefect deployment run '([^'/]+)/([^']+)'", OPERATIONS_DOC.read_text())
    assert commands, "docs/operations.md shows no `prefect deployment run` command"
    for flow_name, deployment_name in commands:
        assert deployment_name in BY_NAME, f"docs name an unknown deployment {deployment_name!r}"
        func = _flow_function(BY_NAME[deployment_name]["entrypoint"])
        assert _flow_name(func) == flow_name, f"docs say flow {flow_name!r}, Prefect will call it {_flow_name(func)!r}"
