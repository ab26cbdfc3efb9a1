"""Flow parameters: PipelineOverrides mirrors the config, every field optional, with its type,
bounds and description (the Prefect UI's form); bad values are refused naming the field."""

from __future__ import annotations

import pytest

from tasks.config import PipelineOverrides, load_config, overrides_dict, validate_overrides
from tasks.errors import ConfigError
from tests.conftest import REPO

CONFIG = REPO / "pipeline_configs" / "maritime_ais.yaml"


def test_dotted_and_nested_overrides_are_the_same_and_unset_fields_keep_the_file():
    dotted = PipelineOverrides.model_validate({"train.max_steps": 7, "validate.plausibility": False})
    nested = PipelineOverrides.model_validate({"train": {"max_steps": 7}, "validate": {"plausibility": False}})
    assert overrides_dict(dotted) == overrides_dict(nested) == {"train": {"max_steps": 7}, "validate": {"plausibility": False}}
    from_file, overridden = load_config(CONFIG), load_config(CONFIG, nested)
    assert overridden.train.max_steps == 7 and overridden.validate_.plausibility is False
    assert overridden.train.batch_size == from_file.train.batch_size  # not set: the file's value
    assert overridden.model_dump(exclude={"train", "validate_"}) == from_file.model_dump(exclude={"train", "validate_"})


@pytest.mark.parametrize(
    ("overrides", "field", "problem"),
    [
        ({"train.max_steps": 0}, "train.max_steps", "greater than or equal to 1"),
        ({"train": {"max_stepz": 3}}, "train.max_stepz", "unknown key"),
        ({"evaluate": {"limit": "many"}}, "evaluate.limit", "valid integer"),
        ({"trian": {"max_steps": 3}}, "trian", "unknown key"),
        ({"teacher": {"teachers": [{"name": "x", "kind": "openai"}]}}, "teacher.teachers.0", "needs model"),
    ],
)
def test_bad_overrides_are_refused_naming_the_field(overrides, field, problem):
    # what the flows run first (flows.params.flow_config), in place of Prefect's parameter validation
    with pytest.raises(ConfigError) as caught:
        validate_overrides(overrides)
    message = str(caught.value)
    assert message.startswith("overrides: ") and f"{field}: " in message and problem in message


def test_the_flows_validate_overrides_themselves():
    # Prefect's validation would log every rejected value, a pasted key included (flows/params.py)
    from flows.end_to_end import end_to_end
    from flows.refresh import refresh
    from flows.review import review_export, review_import
    from flows.train_eval import train_evaluate

    for flow in (refresh, train_evaluate, end_to_end, review_export, review_import):
        assert flow.should_validate_parameters is False, flow.name


def test_the_ui_form_has_every_section_with_types_bounds_and_descriptions():
    from flows.end_to_end import end_to_end
    from flows.refresh import refresh
    from flows.train_eval import train_evaluate

    for flow in (refresh, train_evaluate, end_to_end):
        schema = flow.parameters.model_dump()
        assert "overrides" in schema["properties"]
        definitions = schema["definitions"]
        assert {"TrainConfigOverrides", "GateConfigOverrides", "SimulateConfigOverrides"} <= set(definitions)
    train = refresh.parameters.model_dump()["definitions"]["TrainConfigOverrides"]["properties"]["max_steps"]
    assert {"type": "integer", "minimum": 1} in train["anyOf"] and train["default"] is None
    validate = refresh.parameters.model_dump()["definitions"]["PipelineOverrides"]["properties"]
    assert "validate" in validate  # the YAML's key, not the Python attribute name
    gate = refresh.parameters.model_dump()["definitions"]["GateConfigOverrides"]["properties"]["margin"]
    assert "description" in gate and "Tuned minus base" in gate["description"]


def test_nulls_a_form_sends_for_empty_fields_mean_not_overridden():
    # what a form may send for fields left empty, beside one real override and one real null
    sent = {"train": {"max_steps": None, "batch_size": 4}, "gate": {"enabled": None}, "evaluate": {"limit": None}}
    overrides = PipelineOverrides.model_validate(sent)
    assert overrides_dict(overrides) == {"train": {"batch_size": 4}, "evaluate": {"limit": None}}
    cfg, from_file = load_config(CONFIG, overrides), load_config(CONFIG)
    assert (cfg.train.max_steps, cfg.train.batch_size, cfg.gate.enabled) == (from_file.train.max_steps, 4, from_file.gate.enabled)
    assert cfg.evaluate.limit is None  # limit takes null ("score every item"): an explicit null is kept


def test_a_failed_redaction_still_refuses_the_run_and_never_shows_the_key(monkeypatch):
    import flows.params as params

    key = "sk-test-PLANTED-redaction-fails-0c1d"

    def fails(paths):
        raise RuntimeError(f"422: {{'overrides': {{'judge': {{'llm': {{'base_url': '{key}'}}}}}}}}")

    monkeypatch.setattr(params, "redact_flow_run_parameters", fails)
    with pytest.raises(ConfigError) as caught:
        params.flow_config(str(CONFIG), {"judge": {"llm": {"base_url": key}}})
    message = str(caught.value)
    assert "judge.llm.base_url" in message and "RuntimeError" in message and key not in message
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    # a word that only starts like a key is not one
    assert params.pasted_keys({"source": {"path": "/data/key-frames.csv"}}) == []
