"""docker-compose.yml validates with `docker-compose config` (no engine needed), fits the
deployments' work pools, and the image installs the project with the Makefile's own targets."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed (`make test` installs it with apt-get as root)")


def compose(*args: str) -> str:
    done = subprocess.run([COMPOSE, "-f", str(REPO / "docker-compose.yml"), *args], cwd=REPO, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "POSTGRES_PASSWORD": "pw-from-shell"}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_compose_file_validates_with_and_without_the_gpu_profile():
    compose("config", "--quiet")
    assert sorted(compose("--profile", "gpu", "config", "--services").split()) == [
        "gpu-worker", "postgres", "prefect-server", "worker"]
    services = yaml.safe_load(compose("config"))["services"]
    assert [name for name, s in services.items() if s.get("profiles")] == ["gpu-worker"]
    assert services["gpu-worker"]["profiles"] == ["gpu"]


def test_the_stack_wires_postgres_the_server_and_one_worker_per_deployment_pool():
    resolved = yaml.safe_load(compose("--profile", "gpu", "config"))
    services = resolved["services"]
    url = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url == "postgresql+asyncpg://prefect:pw-from-shell@postgres:5432/prefect"  # the shell's password, not the default
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pw-from-shell"
    assert "ports" not in services["postgres"]
    pools = {}
    for name in ("worker", "gpu-worker"):
        command = services[name]["command"]
        pools[command[command.index("--pool") + 1]] = name
        assert services[name]["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    deployments = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())["deployments"]
    assert {d["work_pool"]["name"] for d in deployments} <= set(pools)
    # keys come from the shell, never from the file
    text = (REPO / "docker-compose.yml").read_text()
    assert not re.search(r"(OPENAI|ANTHROPIC)_API_KEY:[ \t]*\S", text)


def test_the_image_installs_with_the_makefile_targets():
    runs = [line for line in (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines() if line.startswith("RUN")]
    installs = [line for line in runs if "pip" in line or "make " in line]
    assert any("make deps" in line for line in installs) and any("make install" in line for line in installs)
    assert not any(re.search(r"\bpip install\b", line) for line in installs), installs
    make = subprocess.run(["make", "-n", "deps", "install", "VENV=/nonexistent"], cwd=REPO, capture_output=True, text=True)
    assert "-r requirements.lock" in make.stdout and "--no-deps --no-build-isolation -e ." in make.stdout
