"""Generation benchmark: teacher requests/s through the real runtime against a 250 ms loopback server.

The issue it answers (issue 5):

    "Bench bench/generate.py: starts a loopback OpenAI-compatible server that answers after a fixed
    250 ms; runs generation at concurrency 1, 8, 32 and 64 and prints requests/s against the ideal
    (concurrency / latency); last line `efficiency_at_32=<fraction> rps_at_32=<n>`; target >= 0.8
    at 32."

    .venv/bin/python bench/generate.py [--levels 1,8,32,64] [--latency-s 0.25] [--items-per-level 8]
                                       [--profile 32]

Server. `python -m tasks.llm.loopback --port 0 --latency-s 0.25` in a SEPARATE process, so the
server's CPU (HTTP parsing, JSON) does not share this process's GIL with the client; it answers
every request with the JSON draft the prompt carries (tasks/llm/loopback.py draft_responder).

Client. The whole runtime, as the pipeline uses it: `tasks.llm.runner.run_items` with ONE teacher
(kind openai_compatible -> distilabel OpenAILLM -> the openai SDK -> its aiohttp transport), base_url = the
server, model "bench-model" priced 0/0, concurrency = the level, no requests/min or tokens/min cap,
json_mode on. Each level gets N = max(items_per_level * c, 40) distinct items and a fresh cache and
ledger in a temp dir, so nothing is a cache hit; every prompt carries a valid one-turn JSON answer
in <draft>, so every call is accepted on its first try (checked: calls == items, all accepted).
One small untimed run first pays the imports and the first connection.

Measure. wall = seconds of the run_items call (client setup, cache lookups and writes, ledger,
parsing included); rps = calls / wall; ideal = c / latency; efficiency = rps / ideal. The ideal is
a ceiling nothing reaches: each of the c slots is busy for latency + client/server time per call,
and a level's last wave of calls is partly idle when N is not a multiple of c. To show where the
rest goes, the table also gives CPU per call of this process (SDK, distilabel, runtime: one GIL,
so `client busy` near 100 % means the client is the limit) and of the server process (from
/proc/<pid>/stat), and the title the machine's load average (other processes on the 2 cores
delay every wake-up of both).

Before each level, the same requests go to the same server from a bare asyncio + aiohttp client
(no SDK, no runtime, same concurrency): `bare-client efficiency` is what this machine allows at
that moment, so runtime overhead (efficiency well below it) can be told from a busy machine (both
low). `--no-bare` skips it.

`--profile C` runs level C once more under cProfile (not timed in the table) and prints the top
functions by internal time, grouped by where they live (openai/httpx SDK, distilabel, runner,
cache, ledger, asyncio, other), so a low efficiency can be traced.

The last line is `efficiency_at_32=<fraction> rps_at_32=<n>` (nan when 32 is not a level).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import select
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

LEVELS = (1, 8, 32, 64)
LATENCY_S = 0.25
ITEMS_PER_SLOT = 8  # waves of calls per level: a long run's steady state, with the per-run setup (clients, cache, ledger) spread over 8 waves, not 4
MIN_ITEMS = 40
TARGET_EFFICIENCY = 0.8
MODEL = "bench-model"
TEACHER = "bench"
SERVER_START_S = 30.0
SYSTEM_PROMPT = "You are a maritime AIS analyst. Answer only from the AIS records given."


# --- server --------------------------------------------------------------------------------


def start_server(latency_s: float) -> tuple[subprocess.Popen, str]:
    """The loopback server in its own process; returns (process, OpenAI base URL)."""
    command = [sys.executable, "-m", "tasks.llm.loopback", "--port", "0", "--latency-s", str(latency_s)]
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})  # fmt: skip
    ready, _, _ = select.select([proc.stdout], [], [], SERVER_START_S)
    line = proc.stdout.readline().strip() if ready else ""
    if not line.startswith("ready "):
        proc.kill()
        raise SystemExit(f"loopback server did not start within {SERVER_START_S:.0f} s (got {line!r}); its error is above")
    return proc, line.split(" ", 1)[1]


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; nan off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- items and config ----------------------------------------------------------------------


def make_items(level: int, n: int) -> list:
    """n distinct one-turn items whose prompt carries a valid JSON answer in <draft>."""
    from tasks.llm.runner import WorkItem

    items = []
    for i in range(n):
        mmsi = 366_000_000 + level * 10_000 + i
        speed = 8.0 + (i % 70) / 10
        draft = {"turns": [{
            "question": f"What was the maximum speed of vessel {mmsi} between 06:00 and 07:00 UTC?",
            "reasoning": "The highest SOG in the window's reports.",
            "answer": f"Vessel {mmsi} reached at most {speed:.1f} knots between 06:00 and 07:00 UTC.",
        }]}  # fmt: skip
        user = (
            f"AIS position reports for vessel MMSI {mmsi}:\ntime|lat|lon|sog\n"
            f"06:00:00|40.50000|-74.00000|{speed:.1f}\n\n"
            "Write one question and its answer as JSON.\n"
            f"<draft>{json.dumps(draft)}</draft>"
        )
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
        items.append(WorkItem(item_id=f"c{level}-{i:05d}", teacher=TEACHER, messages=messages,
                              expected_turns=1, category="movement"))  # fmt: skip
    return items


def teacher_config(base_url: str, concurrency: int):
    from tasks.config import TeacherConfig, TeacherSpec

    spec = TeacherSpec(name=TEACHER, kind="openai_compatible", model=MODEL, base_url=base_url,
                       concurrency=concurrency, json_mode=True, max_tokens=512)  # fmt: skip
    return TeacherConfig(teachers=[spec], prices={MODEL: {"input_per_mtok": 0.0, "output_per_mtok": 0.0}},
                         timeout_s=30.0, max_retries=2)  # fmt: skip


def bare_client_rps(base_url: str, level: int, items: list) -> float:
    """requests/s of a bare asyncio + aiohttp client (no SDK, no runtime) at the same concurrency,
    same prompts, same server: the ceiling any client reaches on this machine right now."""
    import asyncio

    import aiohttp

    bodies = [json.dumps({"model": MODEL, "messages": item.messages}).encode() for item in items]
    headers = {"content-type": "application/json", "authorization": "Bearer bench"}

    async def main() -> float:
        connector = aiohttp.TCPConnector(limit=level)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def one(body: bytes) -> None:
                async with session.post(f"{base_url}/chat/completions", data=body, headers=headers) as reply:
                    reply.raise_for_status()
                    json.loads(await reply.read())

            await one(bodies[0])  # the first connection, untimed
            started = time.perf_counter()
            await asyncio.gather(*(one(b) for b in bodies))
            return len(bodies) / (time.perf_counter() - started)

    return asyncio.run(main())


def run_level(base_url: str, level: int, n: int, workdir: Path, server_pid: int,
              profile: cProfile.Profile | None = None) -> dict:
    from tasks.llm.runner import run_items

    items = make_items(level, n)
    cfg = teacher_config(base_url, level)
    with tempfile.TemporaryDirectory(prefix=f"c{level}-", dir=workdir) as tmp:
        server_cpu = process_cpu_s(server_pid)
        client_cpu = time.process_time()
        started = time.perf_counter()
        if profile is not None:
            profile.enable()
        summary = run_items(items, cfg, Path(tmp) / "cache.sqlite", Path(tmp) / "ledger.jsonl")
        if profile is not None:
            profile.disable()
        wall = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        server_cpu = process_cpu_s(server_pid) - server_cpu
    statuses: dict[str, int] = {}
    for result in summary.results:
        statuses[result.status] = statuses.get(result.status, 0) + 1
    return {
        "concurrency": level,
        "items": n,
        "calls": summary.calls,
        "cache_hits": summary.cache_hits,
        "wall_s": wall,
        "client_cpu_ms_per_call": client_cpu / max(summary.calls, 1) * 1000,
        "server_cpu_ms_per_call": server_cpu / max(summary.calls, 1) * 1000,
        "client_cpu_share": client_cpu / wall,
        "accepted": statuses.get("accepted", 0),
        "statuses": statuses,
        "stopped": summary.stopped,
    }


# --- report --------------------------------------------------------------------------------


def print_table(rows: list[dict], latency_s: float) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    table = Table(title=f"run_items against a {latency_s * 1000:.0f} ms loopback server "
                  f"({os.cpu_count()} CPUs, load average {load})", box=box.SIMPLE_HEAD)  # fmt: skip
    columns = ("concurrency", "items", "calls", "wall s", "rps", "ideal rps", "efficiency", "accepted",
               "client CPU ms/call", "server CPU ms/call", "client busy", "bare-client efficiency")  # fmt: skip
    for name in columns:
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(str(r["concurrency"]), f"{r['items']:,}", f"{r['calls']:,}", f"{r['wall_s']:.2f}",
                      f"{r['rps']:.1f}", f"{r['ideal_rps']:.1f}", f"{r['efficiency']:.3f}", f"{r['accepted']:,}",
                      f"{r['client_cpu_ms_per_call']:.1f}", f"{r['server_cpu_ms_per_call']:.1f}",
                      f"{r['client_cpu_share']:.0%}",
                      f"{r['bare_efficiency']:.3f}" if "bare_efficiency" in r else "-")  # fmt: skip
    Console(width=160).print(table)
    print("client busy: this process's CPU seconds / wall seconds (100 % = one core: the GIL's limit)")
    if any("bare_efficiency" in r for r in rows):
        print("bare-client efficiency: the same requests from a bare aiohttp client (no SDK, no runtime), just before")


def print_profile(profile: cProfile.Profile, level: int, top: int = 25) -> None:
    """Internal time summed by where the code lives, then the top functions. cProfile times wall
    clock, so the event loop's idle wait (epoll) shows up too: it is listed on its own."""
    stats = pstats.Stats(profile)
    groups = {
        "runtime: tasks/llm/runner": "tasks/llm/runner", "runtime: tasks/llm/cache": "tasks/llm/cache",
        "runtime: tasks/llm/ledger": "tasks/llm/ledger", "runtime: tasks/llm/limits": "tasks/llm/limits",
        "runtime: tasks/llm/clients": "tasks/llm/clients", "runtime: tasks/llm/output": "tasks/llm/output",
        "distilabel": "/distilabel/", "openai SDK": "/openai/", "httpx2 (the SDK's HTTP layer)": "/httpx",
        "aiohttp (the SDK's transport)": "/aiohttp/", "pydantic": "/pydantic", "asyncio": "/asyncio/",
    }  # fmt: skip
    builtins = {"idle: event loop waiting (epoll)": "epoll", "sqlite3 (C)": "sqlite3", "sockets (C)": "socket",
                "json (C)": "json"}  # fmt: skip
    by_group: dict[str, float] = {}
    total = 0.0
    for (filename, _, function), (_, _, tottime, _, _) in stats.stats.items():
        total += tottime
        if filename.startswith("~") or filename == "<built-in>":
            group = next((g for g, needle in builtins.items() if needle in function), "other built-ins (C)")
        else:
            group = next((g for g, needle in groups.items() if needle in filename), "other Python")
        by_group[group] = by_group.get(group, 0.0) + tottime
    print(f"\ncProfile of run_items at concurrency {level}: {total:.2f} s under the profiler (wall clock)")
    for group, seconds in sorted(by_group.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<45} {seconds:7.2f} s  {seconds / total:6.1%}")
    print(f"\ntop {top} functions by internal time:")
    stats.sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrency levels, comma-separated")
    parser.add_argument("--latency-s", type=float, default=LATENCY_S, help="the server's fixed answer time")
    parser.add_argument("--items-per-level", type=int, default=ITEMS_PER_SLOT,
                        help=f"items per level = max(this x concurrency, {MIN_ITEMS})")  # fmt: skip
    parser.add_argument("--profile", type=int, metavar="C", help="profile one more run at concurrency C with cProfile")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare-client ceiling run at each level")
    parser.add_argument("--workdir", type=Path, help="where the per-level caches and ledgers go (default: a temp dir)")
    args = parser.parse_args(argv)
    try:
        levels = [int(x) for x in args.levels.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--levels must be integers separated by commas, e.g. 1,8,32,64 (got {args.levels!r})")
    if not levels or min(levels) < 1 or args.latency_s <= 0 or args.items_per_level < 1:
        parser.error("--levels must be >= 1, --latency-s > 0 and --items-per-level >= 1")

    # distilabel 1.5.3's models trip a harmless pydantic 2.14 warning at import, once per model class
    warnings.filterwarnings("ignore", message="The 'default' attribute with value None")
    from tasks.llm.runner import run_items  # noqa: F401 - fail here, before the server starts, if the runtime is missing

    proc, base_url = start_server(args.latency_s)
    print(f"loopback server: {base_url} (pid {proc.pid}, latency {args.latency_s * 1000:.0f} ms)", file=sys.stderr)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="tidewright-generate-", dir=args.workdir) as tmp:
            workdir = Path(tmp)
            run_level(base_url, 1, 2, workdir, proc.pid)  # warm-up, untimed: imports, SDK client, first connection
            for level in levels:
                n = max(args.items_per_level * level, MIN_ITEMS)
                bare = None if args.no_bare else bare_client_rps(base_url, level, make_items(level, n))
                row = run_level(base_url, level, n, workdir, proc.pid)
                if bare is not None:
                    row["bare_efficiency"] = bare / (level / args.latency_s)
                row["rps"] = row["calls"] / row["wall_s"]
                row["ideal_rps"] = level / args.latency_s
                row["efficiency"] = row["rps"] / row["ideal_rps"]
                rows.append(row)
                print(f"concurrency {level}: {row['calls']} calls in {row['wall_s']:.2f} s", file=sys.stderr)
            profile = None
            if args.profile:
                profile = cProfile.Profile()
                n = max(args.items_per_level * args.profile, MIN_ITEMS)
                run_level(base_url, args.profile, n, workdir, proc.pid, profile)
    finally:
        stop_server(proc)

    print()
    print_table(rows, args.latency_s)
    problems = []
    for r in rows:
        if r["accepted"] != r["items"]:
            problems.append(f"concurrency {r['concurrency']}: {r['accepted']}/{r['items']} accepted ({r['statuses']}, stopped={r['stopped']})")
        if r["calls"] != r["items"]:
            problems.append(f"concurrency {r['concurrency']}: {r['calls']} calls for {r['items']} items ({r['cache_hits']} cache hits)")
    if problems:
        print("CHECK FAILED: " + "; ".join(problems))
    else:
        print(f"check: every item accepted on one call at every level ({sum(r['items'] for r in rows):,} items, no cache hits)")
    at32 = next((r for r in rows if r["concurrency"] == 32), None)
    if at32:
        verdict = "meets" if at32["efficiency"] >= TARGET_EFFICIENCY else "MISSES"
        print(f"efficiency at 32: {at32['efficiency']:.3f} ({verdict} the {TARGET_EFFICIENCY} target)")
    if args.profile:
        print_profile(profile, args.profile)
        print()
    if at32:
        print(f"efficiency_at_32={at32['efficiency']:.3f} rps_at_32={at32['rps']:.1f}")
    else:
        print("efficiency_at_32=nan rps_at_32=nan")
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
