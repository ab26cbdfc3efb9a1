"""What every flow does first with its config and overrides parameters.

The flows take `overrides` as a typed parameter (PipelineOverrides: the Prefect UI renders it as a
form) but validate it themselves (`@flow(validate_parameters=False)`): Prefect's own validation
logs every rejected value, and a key pasted into a field would land in the flow run's logs.
Prefect stores the parameters when it creates the flow run, before any of the flow's code runs,
so a value shaped like an API key is also removed from the stored parameters here, and the run
fails naming the field."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tasks.config import PipelineConfig, load_config, pasted_keys, redact_paths, validate_overrides
from tasks.errors import ConfigError


def flow_config(config: str, overrides: BaseModel | dict[str, Any] | None) -> PipelineConfig:
    """The flow's config, its overrides checked first; a pasted key fails the run (before any work)
    after it has been removed from this flow run's stored parameters."""
    refuse_pasted_keys(overrides, redact=True)
    return load_config(config, validate_overrides(overrides))


def refuse_pasted_keys(overrides: BaseModel | dict[str, Any] | None, redact: bool) -> None:
    """ConfigError naming the override fields that hold a value shaped like an API key (never the
    value). redact: also remove them from the current flow run's stored parameters first."""
    pasted = pasted_keys(overrides)
    if not pasted:
        return
    note = ""
    if redact:
        try:
            if redact_flow_run_parameters(pasted):
                note = "; the value was removed from this flow run's parameters"
        except Exception as exc:  # the API's answer may quote the parameters: only the error's type
            note = (f"; removing it from this flow run's stored parameters failed ({type(exc).__name__}): "
                    "delete the flow run in the Prefect UI")
    raise ConfigError(
        f"overrides {', '.join(pasted)}: this looks like an API key; keep keys in environment variables and give "
        f"the variable's NAME in api_key_env (e.g. OPENAI_API_KEY){note}"
    )


def redact_flow_run_parameters(paths: list[str]) -> bool:
    """Replace the values at `paths` of the current flow run's stored `overrides` parameter with
    "[redacted]" through the Prefect API. False outside a flow run."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return False
    parameters = dict(context.flow_run.parameters or {})
    parameters["overrides"] = redact_paths(parameters.get("overrides"), paths)
    with get_client(sync_client=True) as client:
        client.update_flow_run(context.flow_run.id, parameters=parameters)
    context.flow_run.parameters = parameters
    return True
