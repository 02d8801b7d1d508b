#!/usr/bin/env python3
"""``make bench``: run every benchmark, keep each one's JSON line, write RESULTS.md and a PNG.

Each script runs as its own process (its tables stream to this terminal); its last stdout line
is its JSON summary. The summaries of this machine go to ``benchmarks/results/<label>.json``
(``--label``, default ``<cores>-core <hostname-free CPU model>``), and ``benchmarks/RESULTS.md``
and ``benchmarks/results.png`` are written from every file in ``benchmarks/results/``: a run on
another machine (a quiet 16-core one, say) adds its own section instead of replacing this one.

A script that fails is recorded as failed (exit code and the end of its stderr); the others still
run. ``--quick`` passes ``--quick`` to every script (label_efficiency.py then runs one seed on
each of its four tasks, the pixel task the slowest); without it label_efficiency.py runs 10 seeds of
every tuned method on four tasks, which takes hours on 2 cores: run it alone, with ``--workers``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
RESULTS_PNG = HERE / "results.png"
SCRIPTS = ("latency", "throughput", "disturbance", "swap", "memory", "distiller", "label_efficiency", "edge")
# What issue 12 (and, for the edge mode, issue 14) asks for, per figure: (script, JSON key, goal text, test).
GOALS: list[tuple[str, str, str, Any]] = [
    ("latency", "ratio_p50", "≤ 1.25× (quiet)", lambda v: v <= 1.25),
    ("latency", "p99_us", "≤ 1,000 µs (quiet)", lambda v: v <= 1000),
    ("latency", "gateway_cpu_us_per_hello", "≤ 500 µs", lambda v: v <= 500),
    ("latency", "gateway_cpu_us_per_heartbeat", "-", None),
    ("throughput", "ratio_8", "≥ 0.5×", lambda v: v >= 0.5),
    ("throughput", "ratio_32", "≥ 0.5×", lambda v: v >= 0.5),
    ("throughput", "ratio_128", "-", None),
    ("disturbance", "ratio_poison", "≥ 0.8×", lambda v: v >= 0.8),
    ("disturbance", "ratio_teacher_stopped", "≥ 0.8×", lambda v: v >= 0.8),
    ("disturbance", "teacher_timeouts_poison", "-", None),
    ("disturbance", "teacher_unavailable_poison", "-", None),
    ("swap", "swap_p50_ms", "≤ 5 ms", lambda v: v <= 5),
    ("swap", "swap_p99_ms", "-", None),
    ("swap", "dropped", "0", lambda v: v == 0),
    ("swap", "delayed_by_swaps", "-", None),
    ("swap", "ratio_p99", "-", None),
    ("memory", "total_pss_mib", "≤ 400 MiB", lambda v: v <= 400),
    ("memory", "idle_total_pss_mib", "-", None),
    ("memory", "total_rss_mib", "-", None),
    ("distiller", "ratio", "≥ 0.8×", lambda v: v >= 0.8),
    ("distiller", "ratio_per_cpu", "-", None),
    ("edge", "edge_p50_us", "≤ 50 µs (issue 14)", lambda v: v <= 50),
    ("edge", "promotion_to_edge_p50_ms", "≤ 100 ms (issue 14)", lambda v: v <= 100),
    ("edge", "edge_paced_p50_us", "-", None),
    ("edge", "runtime_p50_us", "-", None),
    ("edge", "ratio_p50", "-", None),
    ("edge", "labels_per_episode", "-", None),
]


def missing_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return True
    return False


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_script(name: str, quick: bool) -> dict[str, Any]:
    command = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if quick else [])
    print(f"\n=== {name}: {' '.join(command[1:])}  (load average {load_avg()[0]})", flush=True)
    started, load_before = time.monotonic(), load_avg()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    errors: collections.deque[str] = collections.deque(maxlen=50)

    def tee_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            errors.append(line)
            sys.stderr.write(line)

    reader = threading.Thread(target=tee_stderr, daemon=True)
    reader.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            sys.stdout.write(line)
            sys.stdout.flush()
        process.wait()
        reader.join(timeout=5)
        stderr = "".join(errors)
    except BaseException:
        process.terminate()  # the script's own handler stops what it started, by pid
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    record: dict[str, Any] = {
        "script": name,
        "quick": quick,
        "exit_code": process.returncode,
        "seconds": round(time.monotonic() - started, 1),
        "load_avg_before": load_before,
        "load_avg_after": load_avg(),
    }
    summary = None
    if process.returncode == 0 and lines:
        with contextlib.suppress(json.JSONDecodeError):
            summary = json.loads(lines[-1])
    if summary is None:
        record["error"] = (stderr.strip().splitlines() or ["(no output)"])[-1][:500]
        print(f"=== {name} FAILED (exit {process.returncode}): {record['error']}", flush=True)
    record["summary"] = summary
    return record


# --------------------------------------------------------------------------------------------------
# RESULTS.md and the PNG, from every machine's file
# --------------------------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def section(run: dict[str, Any]) -> list[str]:
    m = run["machine"]
    out = [
        f"## {run['label']}",
        "",
        f"Measured {run['date']} with `{run['command']}` at commit {run.get('commit') or '?'}: "
        f"{m['cpus']} cores ({m['cpu_model']}), "
        f"{m['memory_gib']} GiB, Python {m['python']}, {m['platform']}. Load average (1/5/15 min) "
        f"at the start {m['load_avg_start']}, at the end {m['load_avg_end']}"
        + (" — **a busy, shared machine: read the ratios, not the absolute figures**." if m["busy"] else "."),
        "",
        "| script | figure | measured | goal (issue 12 unless named) | met | load avg during |",
        "| --- | --- | ---: | --- | --- | --- |",
    ]
    by_script = {r["script"]: r for r in run["scripts"]}
    for script, key, goal, test in GOALS:
        record = by_script.get(script)
        if record is None:
            continue
        summary = record.get("summary")
        if summary is None:
            value, met = f"failed (exit {record['exit_code']})", "-"
        else:
            raw = summary.get(key)
            value = fmt(raw)
            met = "-" if test is None or raw is None else ("yes" if test(raw) else "**no**")
        load = f"{record['load_avg_before'][0]} → {record['load_avg_after'][0]}"
        out.append(f"| {script} | `{key}` | {value} | {goal} | {met} | {load} |")
    out += ["", "Per script (seconds it ran, exit code; the whole JSON line is in `benchmarks/results/`):", ""]
    for record in run["scripts"]:
        note = f" — {record['error']}" if record.get("error") else ""
        out.append(f"- `{record['script']}`: {record['seconds']} s, exit {record['exit_code']}{note}")
    extra = details(by_script)
    if extra:
        out += ["", *extra]
    return [*out, ""]


def details(by_script: dict[str, dict[str, Any]]) -> list[str]:
    """Second-level figures: the per-role CPU tables and memory per process."""
    out: list[str] = []
    latency = (by_script.get("latency") or {}).get("summary")
    if latency and latency.get("cpu_us_per_trip"):
        roles = ("gateway", "perception", "decision", "execution")
        out += ["CPU µs per round trip, by process (latency.py):", "", "| path | " + " | ".join(roles) + " |"]
        out.append("| --- |" + " ---: |" * len(roles))
        for path, cpu in latency["cpu_us_per_trip"].items():
            out.append(f"| {path} | " + " | ".join(fmt(cpu.get(r)) for r in roles) + " |")
        out.append("")
    throughput = (by_script.get("throughput") or {}).get("summary")
    if throughput:
        columns = ("gateway", "perception", "decision", "execution", "clients")
        out += [
            "Decisions/s and CPU µs per decision, by process (throughput.py):",
            "",
            "| peers | clients | runtime/s | echo/s | ratio | " + " | ".join(columns) + " |",
            "| ---: | ---: | ---: | ---: | ---: |" + " ---: |" * len(columns),
        ]
        for row in throughput["configs"]:
            cpu = row["cpu_us_per_decision"]
            out.append(
                f"| {row['peers']} | {row['processes']} | {fmt(row['runtime_per_s'])} | {fmt(row['echo_per_s'])} "
                f"| {fmt(row['ratio'])} | " + " | ".join(fmt(cpu.get(c)) for c in columns) + " |"
            )
        out.append("")
    disturbance = (by_script.get("disturbance") or {}).get("summary")
    if disturbance:
        out += [
            f"Good peers' decisions/s with a poison peer, and with the teacher stopped (disturbance.py, "
            f"{disturbance['peers']} peers):",
            "",
            "| phase | decisions/s | teacher decided | errors | teacher timeouts | teacher unavailable |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in disturbance["phases"]:
            out.append(
                f"| {row['phase']} | {fmt(row['per_s'])} | {row['teacher_share']:.1%} | {row['errors']} "
                f"| {row['teacher_timeouts']} | {row['teacher_unavailable']} |"
            )
        out.append("")
    memory = (by_script.get("memory") or {}).get("summary")
    if memory:
        out += [
            "Memory per process, MiB, under 8 peers (memory.py; idle PSS in brackets):",
            "",
            "| process | RSS | PSS | USS |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name, values in memory["loaded"].items():
            idle = memory["idle"].get(name, {}).get("pss_mib")
            out.append(f"| {name} | {values['rss_mib']} | {values['pss_mib']} ({idle}) | {values['uss_mib']} |")
        out.append(
            f"| **total** | {memory['total_rss_mib']} | **{memory['total_pss_mib']}** "
            f"({memory['idle_total_pss_mib']}) | {memory['total_uss_mib']} |"
        )
        out.append("")
    return out


def write_markdown(runs: list[dict[str, Any]], notes: str) -> None:
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`benchmarks/run_all.py`) from `benchmarks/results/*.json`, one section per",
        "machine; `benchmarks/results.png` plots the same figures. How each figure is measured: the",
        "docstring of its script and `benchmarks/README.md`. Every ratio is against a baseline measured",
        "in the same run, so it survives a noisy machine better than the absolute figures do.",
        "",
    ]
    for run in runs:
        lines += section(run)
    if notes:
        lines += ["## Where the time goes", "", notes.strip(), ""]
    RESULTS_MD.write_text("\n".join(lines))


def write_png(runs: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    (lat, thr, swp), (mem, dist, goals) = axes
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        s = {r["script"]: r.get("summary") for r in run["scripts"]}
        label = run["label"]
        offset = (i - (len(runs) - 1) / 2) * width
        if s.get("latency"):
            x = np.arange(2)
            lat.bar(
                x + offset - width / 4,
                [s["latency"]["p50_us"], s["latency"]["baseline_p50_us"]],
                width / 2,
                label=f"{label} p50",
            )
            lat.bar(
                x + offset + width / 4,
                [s["latency"]["p99_us"], s["latency"]["baseline_p99_us"]],
                width / 2,
                label=f"{label} p99",
                alpha=0.6,
            )
            lat.set_xticks(np.arange(2), ["runtime", "raw ring"])
        if s.get("throughput"):
            rows = s["throughput"]["configs"]
            peers = [r["peers"] for r in rows]
            thr.plot(peers, [r["runtime_per_s"] for r in rows], "o-", label=f"{label} runtime")
            thr.plot(peers, [r["echo_per_s"] for r in rows], "s--", label=f"{label} echo")
        if s.get("swap"):
            x = np.arange(3)
            values = [s["swap"]["swap_p50_ms"], s["swap"]["swap_p99_ms"], s["swap"]["rollback_p50_ms"]]
            swp.bar(x + offset, values, width, label=label)
            swp.set_xticks(x, ["publish→served p50", "p99", "request→served p50"])
        if s.get("memory"):
            names = list(s["memory"]["loaded"])
            x = np.arange(len(names))
            mem.bar(
                x + offset,
                [s["memory"]["loaded"][n]["pss_mib"] for n in names],
                width,
                label=f"{label}: total {s['memory']['total_pss_mib']:.0f} MiB",
            )
            mem.set_xticks(x, names, rotation=30, fontsize=8)
        if s.get("distiller"):
            x = np.arange(2)
            dist.bar(
                x + offset,
                [s["distiller"]["distiller_steps_per_s"], s["distiller"]["bare_steps_per_s"]],
                width,
                label=label,
            )
            dist.set_xticks(x, ["distiller (8 peers)", "bare loop"])
        ratios = {
            "latency\np50\n/ring": (s.get("latency") or {}).get("ratio_p50"),
            "32 peers\n/echo": (s.get("throughput") or {}).get("ratio_32"),
            "poison\npeer\n/baseline": (s.get("disturbance") or {}).get("ratio_poison"),
            "teacher\nstopped\n/baseline": (s.get("disturbance") or {}).get("ratio_teacher_stopped"),
            "distiller\n/bare": (s.get("distiller") or {}).get("ratio"),
            "PSS\n/400 MiB": (s.get("memory") or {}).get("ratio_total_pss_to_goal"),
        }
        x = np.arange(len(ratios))
        goals.bar(x + offset, [v or 0 for v in ratios.values()], width, label=label)
        goals.set_xticks(x, list(ratios), fontsize=8)
    lat.set_title("round trip (µs, log)")
    lat.set_yscale("log")
    thr.set_title("decisions/s by peers")
    thr.set_xscale("log", base=2)
    swp.set_title("hot swap (ms)")
    mem.set_title("PSS per process under 8 peers (MiB)")
    dist.set_title("training steps/s")
    goals.set_title("same-run ratios (goals: 1.25, 0.5, 0.8, 0.8, 0.8, 1.0)")
    goals.axhline(1.0, color="grey", linewidth=0.8)
    for ax in (lat, thr, swp, mem, dist, goals):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("agentrt benchmarks (benchmarks/RESULTS.md)")
    fig.tight_layout()
    fig.savefig(RESULTS_PNG, dpi=100)
    plt.close(fig)


def load_runs() -> list[dict[str, Any]]:
    runs = []
    for path in sorted(RESULTS_DIR.glob("*.json")):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"skipping {path}: {exc}", file=sys.stderr)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every benchmark; write benchmarks/RESULTS.md and results.png.")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these scripts")
    parser.add_argument("--label", help="this machine's section in RESULTS.md (default: cores and CPU model)")
    parser.add_argument("--busy", action="store_true", help="say in RESULTS.md that the machine was shared and busy")
    parser.add_argument("--notes", help="a Markdown file whose text goes to RESULTS.md as 'Where the time goes'")
    parser.add_argument("--report-only", action="store_true", help="rewrite RESULTS.md and the PNG, run nothing")
    args = parser.parse_args(argv)
    if missing_matplotlib():
        print("make bench needs matplotlib for its PNG: install the 'bench' extra (pip install -e '.[bench]')")
        return 2
    records: list[dict[str, Any]] = []
    if not args.report_only:
        scripts = args.only or list(SCRIPTS)
        label = args.label or f"{os.cpu_count()}-core {cpu_model()}"
        start_load = load_avg()
        machine = {
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "memory_gib": memory_gib(),
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
            "load_avg_start": start_load,
            "busy": args.busy or start_load[0] > (os.cpu_count() or 1),
        }
        for name in scripts:
            records.append(run_script(name, args.quick))
        machine["load_avg_end"] = load_avg()
        commit = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        run = {
            "label": label,
            "commit": commit or None,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "make bench"
            + (" (--quick)" if args.quick else "")
            + (f" (--only {' '.join(args.only)})" if args.only else ""),
            "machine": machine,
            "scripts": records,
        }
        RESULTS_DIR.mkdir(exist_ok=True)
        slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
        (RESULTS_DIR / f"{slug}.json").write_text(json.dumps(run, indent=1) + "\n")
    notes = Path(args.notes).read_text() if args.notes else ""
    if not notes and (HERE / "NOTES.md").exists():
        notes = (HERE / "NOTES.md").read_text()
    runs = load_runs()
    write_markdown(runs, notes)
    write_png(runs)
    print(f"\nwrote {RESULTS_MD.relative_to(HERE.parent)} and {RESULTS_PNG.relative_to(HERE.parent)}")
    return 1 if any(r.get("summary") is None for r in records) else 0


if __name__ == "__main__":
    raise SystemExit(main())
