#!/usr/bin/env python3
"""Memory of the whole runtime: RSS, PSS and USS of every process, idle and under 8 peers.

What is measured
----------------
A private daemon (``ChildDaemon``, built-in configuration) is started; the pids of the daemon,
the two fork servers and the six roles are read from ``agentrt status --json``. For each process,
``/proc/<pid>/smaps_rollup`` gives

* **RSS**: resident pages, shared ones counted in full in every process that maps them;
* **PSS**: each shared page divided among the processes that map it (the sum over processes is
  what the runtime really occupies: ``total_pss_mib``, issue 12's goal is ≤ 400 MiB);
* **USS**: pages only this process maps (``Private_Clean + Private_Dirty``): what stopping it frees.

Two phases: **idle** (``--settle`` seconds after every role runs) and **loaded**: 8 SDK peers in
one client process (CartPole-v1, ``policy="auto"``, the default query policy, so the teacher and
the distiller work too) for ``--seconds``; memory is sampled every 0.5 s and the table shows the
last sample, the JSON also each process's peak.

Baselines in the same run: two bare interpreters of the same virtualenv ("floors"), one that
imported what a torch-free role imports (the gateway, perception and execution modules: zmq,
msgpack, numpy, structlog, the plugin manager) and one that imported torch and the learning core as
well and ran one forward pass. They are measured and stopped before the runtime is sampled (alive,
they would share library pages with it). RSS does not depend on who else maps a page, so
``ratio_light_rss_to_floor`` (mean RSS of daemon, gateway, perception, execution ÷ the light floor)
and ``ratio_torch_rss_to_floor`` (mean of decision, teacher, distillation ÷ the torch floor) say how
much of a role is its imports: near 1.0, only a lighter import set shrinks it.
``ratio_loaded_to_idle`` is the loaded total PSS ÷ idle; ``ratio_total_pss_to_goal`` the loaded
total PSS ÷ issue 12's 400 MiB.

Every process started here is stopped by pid in a ``finally``. ``--quick``: 1 s settle, 3 s load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchlib

KIB = 1024
FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Shared_Dirty", "Swap")
TORCH_FREE = ("daemon", "gateway", "perception", "execution")
PSS_GOAL_MIB = 400.0  # issue 12
LIGHT_IMPORT = "import runtime.roles.gateway, runtime.roles.perception, runtime.roles.execution"
TORCH_IMPORT = LIGHT_IMPORT + ", torch, runtime.learn.loop; torch.nn.Linear(4, 2)(torch.zeros(1, 4))"


def smaps_rollup(pid: int) -> dict[str, float]:
    """RSS, PSS, USS and swap of ``pid`` in MiB, from /proc/<pid>/smaps_rollup."""
    values = dict.fromkeys(FIELDS, 0)
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in values:
            values[name] = int(rest.split()[0])  # kB
    return {
        "rss_mib": values["Rss"] / KIB,
        "pss_mib": values["Pss"] / KIB,
        "uss_mib": (values["Private_Clean"] + values["Private_Dirty"]) / KIB,
        "swap_mib": values["Swap"] / KIB,
    }


def runtime_pids(run_dir: Path) -> dict[str, int]:
    """The daemon's, the fork servers' and every role's pid, as ``agentrt status --json`` reports them."""
    # As the daemon was started (ChildDaemon defaults_only): no AGENTRT_* variables, no agentrt.toml.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRT_")}
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "status", "--json", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=run_dir,
    )
    if done.returncode != 0:
        raise RuntimeError(f"agentrt status --json exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    status = json.loads(done.stdout)
    pids = {"daemon": status["daemon"]["pid"]}
    pids.update({f"fork server ({name})": pid for name, pid in status["daemon"]["fork_servers"].items()})
    pids.update({name: role["pid"] for name, role in sorted(status["roles"].items())})
    missing = [name for name, pid in pids.items() if not pid]
    if missing:
        raise RuntimeError(f"status reports no pid for {missing}")
    return pids


def sample(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    return {name: smaps_rollup(pid) for name, pid in pids.items()}


def totals(per_process: dict[str, dict[str, float]]) -> dict[str, float]:
    return {key: sum(p[key] for p in per_process.values()) for key in ("rss_mib", "pss_mib", "uss_mib", "swap_mib")}


# --------------------------------------------------------------------------------------------------
def peers_worker(index: int, commands: Any, results: Any) -> None:
    benchlib.worker_loop(index, commands, results, benchlib.play_gym_peers)


def floor_process(code: str) -> subprocess.Popen:

    from runtime.processes import SAFE_PATH_ENV, die_with_parent

    return subprocess.Popen(
        [sys.executable, "-c", f"{code}; import sys; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **SAFE_PATH_ENV},
        preexec_fn=die_with_parent,
    )


def measure_floors(processes: dict[str, subprocess.Popen]) -> dict[str, dict[str, float]]:
    for name, process in processes.items():
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {name} floor process did not start (exit code {process.poll()})")
    return {name: smaps_rollup(process.pid) for name, process in processes.items()}


def stop_floors(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.kill()
        process.wait()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    workers: benchlib.Workers | None = None
    # Started alongside the daemon (importing torch takes seconds), measured and stopped before the
    # runtime is sampled: alive, they would share library pages with it and lower its PSS.
    floor_processes = {"light": floor_process(LIGHT_IMPORT), "torch": floor_process(TORCH_IMPORT)}
    try:
        with benchlib.private_daemon() as daemon:
            workers = benchlib.Workers(peers_worker, 1)
            floors = measure_floors(floor_processes)
            stop_floors(floor_processes)
            pids = runtime_pids(daemon.run_dir)
            time.sleep(args.settle)
            idle = sample(pids)
            benchlib.progress(f"idle: total PSS {totals(idle)['pss_mib']:.0f} MiB; 8 peers for {args.seconds:g} s")
            workers.send(0, {"endpoint": daemon.endpoint, "peers": 8, "seconds": args.seconds, "policy": "auto"})
            peaks: dict[str, dict[str, float]] = {name: dict(values) for name, values in idle.items()}
            loaded = idle
            ends = time.monotonic() + args.seconds
            while time.monotonic() < ends:
                time.sleep(0.5)
                loaded = sample(pids)
                for name, values in loaded.items():
                    for key, value in values.items():
                        peaks[name][key] = max(peaks[name][key], value)
            (load,) = workers.collect(1, args.seconds + 120)
            if runtime_pids(daemon.run_dir) != pids:
                raise RuntimeError("a role restarted during the measurement")
    finally:
        stop_floors(floor_processes)
        if workers is not None:
            workers.stop()
    idle_total, loaded_total = totals(idle), totals(loaded)
    light = [name for name in pids if name in TORCH_FREE]
    heavy = [name for name in pids if name not in TORCH_FREE and not name.startswith("fork server")]
    summary: dict[str, Any] = {
        "idle": {name: {k: round(v, 1) for k, v in values.items()} for name, values in idle.items()},
        "loaded": {name: {k: round(v, 1) for k, v in values.items()} for name, values in loaded.items()},
        "loaded_peak": {name: {k: round(v, 1) for k, v in values.items()} for name, values in peaks.items()},
        "floors": {name: {k: round(v, 1) for k, v in values.items()} for name, values in floors.items()},
        "idle_total_rss_mib": round(idle_total["rss_mib"], 1),
        "idle_total_pss_mib": round(idle_total["pss_mib"], 1),
        "idle_total_uss_mib": round(idle_total["uss_mib"], 1),
        "total_rss_mib": round(loaded_total["rss_mib"], 1),
        "total_pss_mib": round(loaded_total["pss_mib"], 1),
        "total_uss_mib": round(loaded_total["uss_mib"], 1),
        "ratio_total_pss_to_goal": round(loaded_total["pss_mib"] / PSS_GOAL_MIB, 3),
        # RSS does not depend on who else maps a page: a role against a bare interpreter that
        # imported what it imports says how much of it is its own data rather than its imports.
        "ratio_light_rss_to_floor": round(
            sum(loaded[n]["rss_mib"] for n in light) / len(light) / floors["light"]["rss_mib"], 3
        ),
        "ratio_torch_rss_to_floor": round(
            sum(loaded[n]["rss_mib"] for n in heavy) / len(heavy) / floors["torch"]["rss_mib"], 3
        ),
        "ratio_loaded_to_idle": round(loaded_total["pss_mib"] / idle_total["pss_mib"], 3),
        "load_steps": load["steps"],
        "load_by_teacher": load["by_teacher"],
        "seconds": args.seconds,
    }
    print_table(idle, loaded, floors)
    if args.plot:
        write_plot(args.plot, idle, loaded)
    return summary


def print_table(
    idle: dict[str, dict[str, float]], loaded: dict[str, dict[str, float]], floors: dict[str, dict[str, float]]
) -> None:
    from rich.table import Table

    table = Table(title="memory per process, MiB (smaps_rollup): idle | under 8 peers")
    table.add_column("process")
    for column in ("RSS", "PSS", "USS"):
        table.add_column(f"{column} idle", justify="right")
        table.add_column(f"{column} 8 peers", justify="right")
    rows = [*idle.items(), ("total", totals(idle))]
    loaded_rows = {**loaded, "total": totals(loaded)}
    for name, values in rows:
        cells = []
        for key in ("rss_mib", "pss_mib", "uss_mib"):
            cells += [f"{values[key]:.1f}", f"{loaded_rows[name][key]:.1f}"]
        table.add_row(name, *cells, style="bold" if name == "total" else None)
    for name, values in floors.items():
        cells = []
        for key in ("rss_mib", "pss_mib", "uss_mib"):
            cells += [f"{values[key]:.1f}", ""]
        table.add_row(f"floor: bare {name} interpreter", *cells, style="dim")
    benchlib.console().print(table)


def write_plot(path: str, idle: dict[str, dict[str, float]], loaded: dict[str, dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(idle)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.bar(x - 0.2, [idle[n]["pss_mib"] for n in names], 0.4, label="PSS idle")
    ax.bar(x + 0.2, [loaded[n]["pss_mib"] for n in names], 0.4, label="PSS 8 peers")
    ax.set_xticks(x, names, rotation=30)
    ax.set_ylabel("MiB")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="RSS/PSS/USS of every runtime process, idle and under 8 peers.")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds idle before the idle sample (default 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds under 8 peers (default 10)")
    parser.add_argument("--quick", action="store_true", help="1 s settle, 3 s of load")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG")
    args = parser.parse_args(argv)
    if args.quick:
        args.settle, args.seconds = 1.0, 3.0
    return args


if __name__ == "__main__":
    sys.exit(benchlib.main("memory", measure, parse_args()))
