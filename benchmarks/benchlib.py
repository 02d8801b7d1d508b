"""What the benchmark scripts share: a private daemon, client worker processes stopped by pid,
signal handling, rich output and the JSON last line.

Every script is run as ``python benchmarks/<name>.py``, so this module is importable as
``benchlib`` (the script's own directory is first on ``sys.path``). Spawned children import it too.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

#: Keeps the teacher out of the measured path (as benchmarks/latency.py does): it never acts and no
#: label is requested; peers also send policy="student".
STUDENT_ONLY_QUERY_PARAMS = "{label_share = 0.0, act_below_confidence = 0.0}"
DAEMON_START_TIMEOUT_S = 120.0
ENV_ID = "CartPole-v1"


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU count, load average, Python, platform."""
    load1, load5, load15 = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "load_avg": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def console() -> Any:
    from rich.console import Console

    out = Console(file=sys.stdout)
    if not out.is_terminal:
        out.width = max(out.width, 110)  # rich assumes 80 columns when piped
    return out


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the tables and the JSON line only)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _terminated(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(name: str, run: Callable[[Any], dict[str, Any]], args: Any) -> int:
    """Run ``run(args)`` with Ctrl-C and SIGTERM turned into a clean stop (its ``finally`` blocks
    stop every process it started, by pid); print the summary as the LAST line of stdout."""
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    try:
        summary = run(args)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; every process started was stopped", file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError) as exc:
        print(f"{name} benchmark failed: {exc}", file=sys.stderr)
        return 1
    summary["machine"] = machine()
    sys.stdout.flush()
    print(json.dumps(summary), flush=True)
    return 0


# --------------------------------------------------------------------------------------------------
# A private daemon
# --------------------------------------------------------------------------------------------------
@contextmanager
def private_daemon(env: Mapping[str, str] | None = None, run_dir: Any = None, config_path: Any = None) -> Iterator[Any]:
    """A daemon with the built-in configuration (or ``config_path``) plus ``env``, on a free port, in
    its own run directory; stopped (with every role it ever reported, by pid) on the way out, whatever happens."""
    from runtime.supervisor.launch import ChildDaemon

    daemon = ChildDaemon(run_dir=run_dir, config_path=config_path, env=dict(env or {}), defaults_only=True)
    try:
        started = time.monotonic()
        daemon.wait_ready(DAEMON_START_TIMEOUT_S)
        daemon.endpoint  # noqa: B018 (waits for the gateway's bound endpoint)
        progress(f"daemon ready in {time.monotonic() - started:.1f} s at {daemon.endpoint}")
        yield daemon
    finally:
        daemon.stop()


def counter(status: dict[str, Any], role: str, name: str) -> int:
    return int(status["roles"][role]["counters"].get(name, 0))


def dropped(status: dict[str, Any]) -> int:
    """Messages any role dropped on a full queue (``dropped.*`` counters), all roles together."""
    return sum(
        int(value)
        for role in status["roles"].values()
        for key, value in role["counters"].items()
        if key.startswith("dropped.")
    )


# --------------------------------------------------------------------------------------------------
# Worker processes (spawned, stopped by pid)
# --------------------------------------------------------------------------------------------------
def worker_setup() -> None:
    """In a spawned child: die with the benchmark, leave Ctrl-C to the parent (it stops us by pid)."""
    from runtime.processes import die_with_parent

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Workers:
    """Spawned worker processes, each running ``target(index, commands, results, *args)``.

    ``stop`` sends None to each, then SIGTERM, then SIGKILL, by pid; use it in a ``finally``."""

    def __init__(self, target: Callable[..., None], count: int, *args: Any) -> None:
        ctx = mp.get_context("spawn")
        self.results: Any = ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(count)]
        self.processes = []
        for index in range(count):
            process = ctx.Process(
                target=target, args=(index, self.commands[index], self.results, *args), name=f"bench-worker-{index}"
            )
            process.daemon = True
            process.start()
            self.processes.append(process)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def send(self, index: int, command: Any) -> None:
        self.commands[index].put(command)

    def collect(self, count: int, timeout_s: float) -> list[Any]:
        """``count`` results (any order); a worker's exception arrives as ("error", text) and raises."""
        import queue

        results = []
        deadline = time.monotonic() + timeout_s
        while len(results) < count:
            try:
                item = self.results.get(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                dead = [p for p in self.processes if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"worker {dead[0].name} exited with code {dead[0].exitcode}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"workers answered {len(results)} of {count} within {timeout_s:g} s") from None
                continue
            if isinstance(item, tuple) and item and item[0] == "error":
                raise RuntimeError(f"a worker failed: {item[1]}")
            results.append(item)
        return results

    def stop(self) -> None:
        for queue_ in self.commands:
            with suppress(OSError, ValueError):
                queue_.put(None)
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=3)
            if process.is_alive():
                process.kill()
                process.join()


def worker_loop(index: int, commands: Any, results: Any, handle: Callable[[Any], Any]) -> None:
    """Serve commands until None; report every result or the exception's text."""
    import traceback

    worker_setup()
    while True:
        command = commands.get()
        if command is None:
            return
        try:
            results.put(handle(command))
        except Exception:
            results.put(("error", f"worker {index}: {traceback.format_exc(limit=6)}"))


def play_gym_peers(command: dict[str, Any]) -> dict[str, Any]:
    """A worker's command: ``peers`` gym peers against ``endpoint`` for ``seconds``, with ``policy``."""
    from runtime.peer.gym import run_gym_peers

    deadline = time.monotonic() + command["seconds"]
    summary = run_gym_peers(
        command["endpoint"],
        ENV_ID,
        episodes=10**9,
        peers=command["peers"],
        policy=command["policy"],
        seed=command.get("seed", 0),
        should_stop=lambda: time.monotonic() >= deadline,
    )
    return {"steps": summary.steps, "by_teacher": summary.by_teacher, "seconds": summary.duration_s}


def percentile(values: Any, q: float) -> float | None:
    import numpy as np

    values = np.asarray(values, dtype=float)
    return float(np.percentile(values, q)) if len(values) else None


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
