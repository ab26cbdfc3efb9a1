# tidewright runtime image: Prefect server, process workers and the flows share it, so the
# client, the server and the flow code always run the same locked versions (prefect 3.8.8 with
# fastapi 0.140.13; a newer fastapi breaks Prefect 3.8.8's server at start).
#
# Written but never built on the machine where this file was written (it has no Docker engine).
#
#   docker build -t tidewright:local .                              # CPU image (default)
#   docker build --build-arg TORCH_INDEX_URL= -t tidewright:gpu .   # GPU image
#
# CPU image: torch==2.13.0 comes from the PyTorch CPU wheel index (2.13.0+cpu), a few hundred MB
# instead of several GB. The GPU image installs the *same pin* from PyPI instead, whose Linux
# x86_64 wheel is the CUDA build; pip then adds torch's nvidia-* runtime wheels, which
# requirements.lock does not list (it was resolved on a CPU machine). The host needs the NVIDIA
# driver and the NVIDIA Container Toolkit; the CUDA runtime itself ships inside those wheels.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    HF_HOME=/home/app/.cache/huggingface

RUN useradd --create-home --uid 1000 app \
    && apt-get update && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# deployments/prefect.yaml: the pull step enters $TIDEWRIGHT_HOME before each flow run
ENV TIDEWRIGHT_HOME=/app \
    PATH=/app/.venv/bin:$PATH

# The same install steps as on a developer machine (`make deps`, then `make install`: the locked
# dependencies into /app/.venv, then the project, editable), dependencies first in their own layer
# so a code change does not reinstall torch. pip reads PIP_EXTRA_INDEX_URL for the torch wheel index.
COPY Makefile requirements.lock ./
RUN PIP_EXTRA_INDEX_URL="${TORCH_INDEX_URL}" make deps

COPY --chown=app:app . .
# Editable: `tasks` and `flows` then import from /app, so paths computed from a module's location
# (sql/, pipeline_configs/) point into /app.
RUN make install \
    && mkdir -p /app/runs "$HF_HOME" \
    && chown app:app /app \
    && chown -R app:app /app/runs /home/app

USER app

# Every run writes runs/<run-id>/ here; docker-compose mounts one named volume on it for all
# workers, so a GPU worker's train/evaluate run finds the dataset a CPU worker's refresh wrote.
VOLUME ["/app/runs"]

# The Prefect deployment's pull step enters $TIDEWRIGHT_HOME (set to this directory above).
CMD ["prefect", "worker", "start", "--pool", "cpu-pool", "--type", "process"]
