"""Stage reuse across runs: a Prefect cache policy keyed on what a stage's result depends on, and a
content-addressed store of the files it wrote.

Prefect's default policy includes the flow run id, so nothing is reused across runs, and an input it
cannot hash turns caching off without a word. Here every stage is keyed on:

- the content of the files and folders it reads (never their paths: the simulator writes the same
  CSV into a new run folder every night),
- its config section(s) and other arguments, by value,
- the SQL files it runs (`sql/`),
- where it writes its outputs, relative to the run folder,
- the code version: the package version and a digest of every module under tasks/ and flows/
  (coarse on purpose: a stage's code reaches helpers in other modules through imports inside
  functions). Not covered: code outside the package that a config names (a domain validator in
  your own module) and the weights behind a model path: delete stage_cache/ or set
  run.reuse_stages=false after changing those.

An argument that cannot be hashed is a programming error (`StageCacheError`), not a silent miss.

A stage's files live in its run folder; Prefect persists the stage's return value (the result store
under `<runs_dir>/stage_cache/`) with a manifest of those files, whose bytes go to a blob store keyed
by their digest (identical files are stored once). On a hit, `StageRunner.run` copies the blobs into
the new run folder, checking every digest, and rewrites the earlier run's folder in the returned
value to this run's. A missing or corrupt blob, or a result marked incomplete (an LLM stage that
stopped early), makes the stage run again and refresh its entry. Deleting `stage_cache/` is always
safe: the next run recomputes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache, wraps
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.context import TaskRunContext
from pydantic import BaseModel

from tasks.errors import TidewrightError, storage_faults

PACKAGE_ROOT = Path(__file__).resolve().parent
SQL_DIR = PACKAGE_ROOT.parent / "sql"
CHUNK = 1 << 20


class StageCacheError(TidewrightError):
    """A stage argument the cache cannot key on, or a stage output outside the run folder."""


class _BlobMissing(Exception):
    """A blob of a cached stage is gone or does not match its digest: the stage must run again."""


def _hasher():
    return hashlib.blake2b(digest_size=20)


@lru_cache(maxsize=4096)
def _file_digest_cached(path: str, size: int, mtime_ns: int, inode: int) -> str:
    h = _hasher()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """Content digest of a file (memoised on size, mtime and inode: a rewritten file is hashed again)."""
    st = os.stat(path)
    return _file_digest_cached(str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def _files_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and ".writing." not in str(p))


def path_digest(path: Path) -> str:
    """Digest of a file's bytes, or of a folder's file names and bytes (hidden and half-written files aside)."""
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    h = _hasher()
    for f in _files_under(path):
        h.update(f"{f.relative_to(path).as_posix()}\0{file_digest(f)}\n".encode())
    return "dir:" + h.hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """tidewright's version and a digest of its modules, flows and bundled data (tasks/**, flows/*.py)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("tidewright")
    except PackageNotFoundError:
        release = "unknown"
    h = _hasher()
    files = [*PACKAGE_ROOT.rglob("*"), *(PACKAGE_ROOT.parent / "flows").glob("*.py")]
    for f in sorted(files):
        if f.is_file() and f.suffix in (".py", ".csv", ".j2", ".json", ".yaml") and "__pycache__" not in f.parts:
            h.update(f"{f.relative_to(PACKAGE_ROOT.parent).as_posix()}\0{file_digest(f)}\n".encode())
    return f"{release}+{h.hexdigest()[:16]}"


def sql_digest() -> str:
    return path_digest(SQL_DIR)


def value_digest(value: Any, where: str) -> Any:
    """A JSON-able stand-in for value that changes when the stage's result could: file and folder
    contents for existing paths, config sections by value. Raises for what it cannot key on."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return path_digest(value) if value.exists() else f"missing:{value}"
    if isinstance(value, BaseModel):
        return {"model": type(value).__name__, "fields": value_digest(value.model_dump(mode="json"), where)}
    if isinstance(value, dict):
        return {str(k): value_digest(v, f"{where}.{k}") for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [value_digest(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, pd.DataFrame):
        h = _hasher()
        h.update(json.dumps([list(map(str, value.columns)), list(map(str, value.dtypes))]).encode())
        h.update(pd.util.hash_pandas_object(value, index=True).values.tobytes())
        return "frame:" + h.hexdigest()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value_digest({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, where)
    raise StageCacheError(
        f"stage argument {where} of type {type(value).__name__} cannot be keyed for reuse across runs; "
        "pass paths, config sections or plain values (or list it in the stage's ignore=)"
    )


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


@dataclass
class StageInputs(CachePolicy):
    """Cache key of one stage: name, code version, SQL files, and every argument except its outputs
    and ignored ones (caches, ledgers) by content/value. In-place outputs (`updates`) count as
    inputs with their content before the stage runs. No key (no reuse) when an output lies outside
    the run folder: a shared store written as a side effect cannot be restored from a manifest."""

    stage: str = ""
    run_dir: str = ""
    outputs: tuple[str, ...] = ()
    updates: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    uses_sql: bool = False

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        parts: dict[str, Any] = {"stage": self.stage, "code": code_version()}
        if self.uses_sql:
            parts["sql"] = sql_digest()
        for name, value in sorted(inputs.items()):
            if name in self.outputs:
                if value is not None and not _inside(value, self.run_dir):
                    return None
                if value is not None:  # where it writes: a restored file lands where this code reads it
                    parts[f"{name}@"] = Path(value).resolve().relative_to(Path(self.run_dir).resolve()).as_posix()
                if name not in self.updates:
                    continue
            if name in self.ignore:
                continue
            parts[name] = value_digest(value, f"{self.stage}.{name}")
        return f"{self.stage}-" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class StageOutput:
    """What Prefect persists for a stage: its return value and its files (run-relative path -> blob digest)."""

    value: Any
    files: dict[str, str]
    run_dir: str
    flow_run_id: str | None
    complete: bool = True


@dataclass
class StageRecord:
    """How a stage went in this run, for stats.json and the report."""

    reused: bool
    key: str | None
    from_run: str | None = None
    note: str = ""
    files: int = 0


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def put(self, source: Path) -> str:
        """Store a copy of source; returns its digest, computed from the bytes copied (never a memo)."""
        self.root.mkdir(parents=True, exist_ok=True)
        pending = self.root / f".put.{os.getpid()}.{threading.get_ident()}"
        h = _hasher()
        with open(source, "rb") as src, open(pending, "wb") as dst:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                dst.write(chunk)
        digest = h.hexdigest()
        target = self.path(digest)
        if target.exists():
            pending.unlink()
            os.utime(target)  # used by this run now: pruning goes by last use
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(pending, target)
        return digest

    def restore(self, digest: str, target: Path) -> None:
        """Copy blob digest to target (atomically), checking the bytes copied against the digest."""
        source = self.path(digest)
        if target.is_file() and file_digest(target) == digest:
            return
        if not source.is_file():
            raise _BlobMissing(f"blob {source} is missing")
        target.parent.mkdir(parents=True, exist_ok=True)
        pending = target.with_name(f".{target.name}.writing.{os.getpid()}.{threading.get_ident()}")
        h = _hasher()
        try:
            with open(source, "rb") as src, open(pending, "wb") as dst:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
        except FileNotFoundError:  # pruned by another run since the check above
            pending.unlink(missing_ok=True)
            raise _BlobMissing(f"blob {source} is missing") from None
        if h.hexdigest() != digest:
            pending.unlink()
            source.unlink()  # the stage runs again and stores a good copy
            raise _BlobMissing(f"blob {source} does not match its digest")
        os.replace(pending, target)


def reroot(value: Any, old: Path, new: Path) -> Any:
    """value with every path (and path-like string) under old moved under new."""
    old_text = str(old)

    def move(v: Any) -> Any:
        if isinstance(v, Path):
            return new / v.relative_to(old) if _inside(v, old) and v.is_absolute() == old.is_absolute() else v
        if isinstance(v, str):
            return str(new) + v[len(old_text):] if v == old_text or v.startswith(old_text + os.sep) else v
        if isinstance(v, dict):
            return {move(k): move(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(move(x) for x in v)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return dataclasses.replace(v, **{f.name: move(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init})
        return v

    return move(value)


class StageRunner:
    """Runs the stages of one run folder as Prefect tasks that are reused across runs.

    `cache_dir` holds Prefect's cache records (`keys/`), persisted results (`results/`) and file blobs
    (`blobs/`). With `reuse=False` every stage runs and overwrites its entry (Prefect's refresh_cache)."""

    def __init__(self, run_dir: Path, cache_dir: Path, reuse: bool = True, plan: list[str] | None = None):
        self.plan = plan or []  # the stage names in order, for "[k/n]" progress lines
        self.run_dir = Path(run_dir)
        self.cache_dir = Path(cache_dir)
        self.reuse = reuse
        self.blobs = BlobStore(self.cache_dir / "blobs")
        self.records: dict[str, StageRecord] = {}
        self._ran: set[str] = set()  # stages whose own code started (a failure before it is the cache's)

    def _task(self, fn: Callable[..., Any], policy: StageInputs, complete: Callable[[Any], bool], refresh: bool,
              cacheable: bool = True):
        """The stage as a Prefect task. Not cacheable (no key): no persisted result and no blobs."""
        run_dir, blobs, outputs, ran = self.run_dir, self.blobs, policy.outputs if cacheable else (), self._ran

        @wraps(fn)
        def body(*args: Any, **kwargs: Any) -> StageOutput:
            ran.add(policy.stage)
            with storage_faults(run_dir):
                value = fn(*args, **kwargs)
                bound = _bind(fn, args, kwargs)
                files: dict[str, str] = {}
                for arg in outputs:
                    target = bound.get(arg)
                    if target is None or not Path(target).exists() or not _inside(target, run_dir):
                        continue
                    for f in _files_under(Path(target)):
                        files[f.resolve().relative_to(run_dir.resolve()).as_posix()] = blobs.put(f)
            task_context = TaskRunContext.get()
            flow_run_id = task_context.task_run.flow_run_id if task_context else None
            return StageOutput(value, files, str(run_dir), str(flow_run_id) if flow_run_id else None,
                               bool(complete(value)))

        if not cacheable:
            return task(name=policy.stage, cache_policy=NO_CACHE, persist_result=False)(body)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        return task(name=policy.stage, cache_policy=policy.configure(key_storage=self.cache_dir / "keys"), persist_result=True,
                    result_storage=self.cache_dir / "results",
                    refresh_cache=refresh or not self.reuse)(body)

    def run(self, name: str, fn: Callable[..., Any], *args: Any, outputs: tuple[str, ...] = (),
            updates: tuple[str, ...] = (), ignore: tuple[str, ...] = (), uses_sql: bool = False,
            complete: Callable[[Any], bool] = lambda value: True, submitted: Any = None, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) as the Prefect task `name`, or its result from an earlier run whose key matches.

        outputs: the arguments naming files/folders the stage writes (inside the run folder);
        updates: outputs it changes in place (their earlier content is part of the key);
        ignore: arguments that do not change the result (caches, ledgers, progress switches);
        complete: False for a result that must not be reused (e.g. a teacher run stopped by its budget)."""
        from prefect.context import FlowRunContext

        unknown = set(outputs) | set(updates) | set(ignore)
        unknown -= set(_bind(fn, args, kwargs)) | set(_parameters(fn))
        if unknown:
            raise StageCacheError(f"stage {name}: {sorted(unknown)} are not parameters of {fn.__name__}")
        flow_context = FlowRunContext.get()
        flow_run_id = str(flow_context.flow_run.id) if flow_context and flow_context.flow_run else None
        note = ""
        policy = StageInputs(stage=name, run_dir=str(self.run_dir), outputs=outputs, updates=updates, ignore=ignore,
                             uses_sql=uses_sql)
        key = policy.compute_key(None, _bind(fn, args, kwargs), {})  # type: ignore[arg-type]
        step = f"[{self.plan.index(name) + 1}/{len(self.plan)}] " if name in self.plan else ""
        _log().info("%s%s ...", step, name)
        started = time.monotonic()
        if submitted is None:
            self._ran.discard(name)
        for refresh in (False, True):
            try:
                with storage_faults(self.cache_dir):  # the cache folder, and Prefect persisting the result
                    if submitted is not None and not refresh:
                        submitted.wait()
                        state = submitted.state
                    else:
                        state = self._task(fn, policy, complete, refresh, key is not None)(*args, return_state=True, **kwargs)
                    output: StageOutput = state.result()
            except Exception as exc:
                # failed before the stage's code started: Prefect could not read the cached result
                # (a damaged file under stage_cache/); running the stage again rewrites the entry
                if refresh or name in self._ran or isinstance(exc, TidewrightError):
                    raise
                note = f"its cached result could not be read ({type(exc).__name__}: {exc}); ran again"
                continue
            reused = output.flow_run_id != flow_run_id or state.name == "Cached"
            if not reused:
                break
            if not output.complete:
                note = "the earlier result was incomplete; ran again"
                continue
            try:
                with storage_faults(self.run_dir):
                    for rel, digest in output.files.items():
                        self.blobs.restore(digest, self.run_dir / rel)
                self._touch(key, output.files.values())
            except _BlobMissing as exc:
                note = f"{exc}; ran again"
                continue
            self.records[name] = StageRecord(True, key, Path(output.run_dir).name, note, len(output.files))
            _log().info("%s%s: reused the result of run %s (unchanged inputs, config, SQL and code; %d files restored, "
                        "%.1f s)%s", step, name, Path(output.run_dir).name, len(output.files), time.monotonic() - started,
                        f"; {note}" if note else "")
            return reroot(output.value, Path(output.run_dir), self.run_dir)
        self.records[name] = StageRecord(False, key, None, note, len(output.files))
        _log().info("%s%s: done in %.1f s%s", step, name, time.monotonic() - started, f" ({note})" if note else "")
        return output.value

    def submit(self, name: str, fn: Callable[..., Any], *args: Any, outputs: tuple[str, ...] = (),
               updates: tuple[str, ...] = (), ignore: tuple[str, ...] = (), uses_sql: bool = False,
               complete: Callable[[Any], bool] = lambda value: True, **kwargs: Any) -> Callable[[], Any]:
        """Like run, but through the flow's task runner (threads by default; Dask or Ray processes or
        machines when the flow is given such a runner): returns a function that waits for the stage
        and returns what run would. For independent stages (no updates of shared files)."""
        policy = StageInputs(stage=name, run_dir=str(self.run_dir), outputs=outputs, updates=updates, ignore=ignore,
                             uses_sql=uses_sql)
        self._ran.discard(name)
        cacheable = policy.compute_key(None, _bind(fn, args, kwargs), {}) is not None  # type: ignore[arg-type]
        with storage_faults(self.cache_dir):
            future = self._task(fn, policy, complete, False, cacheable).submit(*args, **kwargs)
        return lambda: self.run(name, fn, *args, outputs=outputs, updates=updates, ignore=ignore, uses_sql=uses_sql,
                                complete=complete, submitted=future, **kwargs)

    def _touch(self, key: str | None, digests: Any) -> None:
        """Mark a reused entry (its key record, result and blobs) as used now: prune_stage_cache drops
        the entries used longest ago first."""
        paths = [self.blobs.path(d) for d in digests]
        if key:
            paths += [self.cache_dir / "keys" / key, self.cache_dir / "results" / key]
        for path in paths:
            try:
                os.utime(path)
            except OSError:
                pass  # gone meanwhile (pruned by another run): the next use stores it again

    def group(self, name: str, members: list[str]) -> StageRecord:
        """One record for a stage that ran as several tasks (e.g. generation batches): reused when all were."""
        records = [self.records[m] for m in members if m in self.records]
        reused = bool(records) and len(records) == len(members) and all(r.reused for r in records)
        sources = sorted({r.from_run for r in records if r.from_run})
        record = StageRecord(reused, None, ", ".join(sources) or None,
                             f"{sum(r.reused for r in records)} of {len(members)} tasks reused", sum(r.files for r in records))
        self.records[name] = record
        return record

    def summary(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(record) for name, record in self.records.items()}


def prune_stage_cache(cache_dir: Path, max_bytes: int, used_since: float) -> dict[str, int]:
    """Delete the stage-cache entries used longest ago until the cache holds at most max_bytes.

    An entry is a stage result (keys/<key> with results/<key>) or one blob; its age is its files'
    newest mtime (StageRunner touches what it reuses). Entries used at or after `used_since` (the
    current run's start) are kept even above the limit. Deleting is always safe: a stage whose
    result is gone runs again, and one whose blob is gone runs again and stores it anew (also when
    another run on the same cache is using the entry at that moment). Returns the counts."""
    cache_dir = Path(cache_dir)
    units: dict[str, list[Path]] = {}
    for sub in ("keys", "results"):
        for path in (cache_dir / sub).glob("*"):
            if path.is_file() and not path.name.startswith("."):
                units.setdefault(f"stage:{path.name}", []).append(path)
    for path in (cache_dir / "blobs").glob("*/*"):
        if path.is_file() and not path.name.startswith("."):
            units[f"blob:{path.name}"] = [path]

    def stat(paths: list[Path]) -> tuple[float, int]:
        mtime, size = 0.0, 0
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                continue
            mtime, size = max(mtime, st.st_mtime), size + st.st_size
        return mtime, size

    sized = sorted(((*stat(paths), name) for name, paths in units.items()), key=lambda u: (u[0], u[2]))
    total = sum(size for _, size, _ in sized)
    before, removed, freed = total, 0, 0
    for mtime, size, name in sized:
        if total <= max_bytes:
            break
        if mtime >= used_since:
            continue
        for path in units[name]:
            path.unlink(missing_ok=True)
        total -= size
        removed, freed = removed + 1, freed + size
    return {"bytes_before": before, "bytes_after": total, "entries_removed": removed, "bytes_freed": freed}


def _log() -> Any:
    from prefect.context import FlowRunContext
    from prefect.logging import get_run_logger

    return get_run_logger() if FlowRunContext.get() else logging.getLogger("tidewright.stagecache")


def _parameters(fn: Callable[..., Any]) -> list[str]:
    import inspect

    return list(inspect.signature(fn).parameters)


def _bind(fn: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    import inspect

    bound = inspect.signature(fn).bind_partial(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)
