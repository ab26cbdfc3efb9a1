"""End-to-end flow: refresh, then train + evaluate on what it published."""

from __future__ import annotations

from prefect import flow

from flows.params import flow_config
from flows.refresh import DEFAULT_CONFIG, refresh
from flows.train_eval import train_evaluate
from tasks.config import PipelineOverrides


@flow(name="end-to-end", validate_parameters=False)
def end_to_end(config: str = DEFAULT_CONFIG, overrides: PipelineOverrides | None = None, run_id: str | None = None) -> str:
    flow_config(config, overrides)  # checked (and a pasted key removed) before either subflow starts
    run_dir = refresh(config=config, overrides=overrides, run_id=run_id)
    train_evaluate(config=config, overrides=overrides, run_dir=run_dir)
    return run_dir


if __name__ == "__main__":
    end_to_end()
