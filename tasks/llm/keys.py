"""Where a teacher's API key comes from: the environment variable its config names (never the
config itself). Light on purpose: evaluation checks a key without loading the teacher runtime."""

from __future__ import annotations

import os
from typing import Any

from tasks.config import TeacherSpec
from tasks.errors import ConfigError

DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
# an OpenAI-compatible server without auth (vLLM, Ollama, transformers serve) still needs a
# non-empty key for the SDK; never fall back to OPENAI_API_KEY: it must not reach a third party
NO_KEY_PLACEHOLDER = "no-key"


def api_key(spec: TeacherSpec, unless: str = "set teacher api_key_env to the variable that holds it") -> str:
    """The key a teacher's calls carry (a placeholder for a server without auth); a ConfigError
    naming the variable when it is not set. unless: the other way out, said in that error."""
    env = spec.api_key_env or DEFAULT_KEY_ENV.get(spec.kind)
    if env is None:  # openai_compatible without a named variable: a server without auth
        return NO_KEY_PLACEHOLDER
    value = os.environ.get(env, "").strip()
    if not value:
        raise ConfigError(
            f"teacher {spec.name!r} ({spec.kind}) needs an API key in environment variable {env}, which is "
            f"not set; export {env}=<key> (or {unless})"
        )
    return value


def check_api_keys(cfg: Any, generation: bool = True, evaluation: bool = False) -> None:
    """Every key variable the run's API models read is set, before any work: a teacher or judge
    without its key would otherwise fail after ingest, facts and seeds (a scored teacher after
    training). generation: the teachers and the judge; evaluation: the teacher scored beside the student."""
    specs = []
    if generation:
        specs += [t for t in cfg.teacher.teachers if t.kind != "template"]
        if cfg.judge.enabled:
            specs.append(cfg.judge.llm)
    if evaluation and cfg.eval_teacher() is not None:
        specs.append(cfg.eval_teacher())
    for spec in specs:
        api_key(spec)
