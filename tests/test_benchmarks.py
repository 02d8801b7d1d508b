"""The fast-path benchmarks (benchmarks/{throughput,swap,memory,distiller,run_all}.py): their parsing
and reporting without a daemon, in a second or two; and, with BENCH_SMOKE=1, each script
run end to end with ``--quick``, checking only that its last stdout line is JSON with the keys the
report reads (never the figures). The end-to-end runs are opt-in: each starts a daemon and takes
30-45 s on a busy 2-core machine, over the suite's budget for one test."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def _load(name: str):
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # the scripts import benchlib as a sibling module
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_smaps_rollup_of_this_process():
    memory = _load("memory")
    values = memory.smaps_rollup(os.getpid())
    assert set(values) == {"rss_mib", "pss_mib", "uss_mib", "swap_mib"}
    assert values["rss_mib"] >= values["pss_mib"] >= values["uss_mib"] > 0


def test_swap_reads_publish_and_swap_times_from_the_log(tmp_path):
    swap = _load("swap")
    log = tmp_path / "daemon.log"
    log.write_text(
        "\n".join(
            [
                '{"event": "student_rolled_back", "role": "distillation", "version": 3, '
                '"timestamp": "2026-01-01T00:00:01.250000Z"}',
                '{"event": "weights_swapped", "role": "decision", "version": 3, "load_ms": 0.4, '
                '"timestamp": "2026-01-01T00:00:01.252000Z"}',
                "not json at all: student_rolled_back",
                '{"event": "student_rolled_back", "role": "distillation", "version": 3, '
                '"timestamp": "2026-01-01T00:00:09Z"}',
            ]
        )
    )
    published = swap.log_events(log, "student_rolled_back", "distillation")
    swapped = swap.log_events(log, "weights_swapped", "decision")
    assert list(published) == [3] and list(swapped) == [3]  # the first line per version counts
    assert swapped[3]["at"] - published[3]["at"] == pytest.approx(0.002, abs=1e-6)
    assert swapped[3]["load_ms"] == 0.4


def test_swap_seeds_promoted_versions_through_the_registry(tmp_path):
    """The versions swap.py publishes are written the distiller's way (it once called a removed method)."""
    from runtime.learn.registry import PROMOTED, Registry

    swap = _load("swap")
    swap.seed_versions(tmp_path, 3)
    registry = Registry(tmp_path)
    try:
        assert [(r.version, r.status) for r in registry.versions()] == [(v, PROMOTED) for v in (1, 2, 3)]
        assert registry.serving() == 1
        assert all(registry.file(r).stat().st_size > 0 for r in registry.versions())
    finally:
        registry.close()


def test_throughput_arguments():
    throughput = _load("throughput")
    args = throughput.parse_args(["--quick", "--peers", "8", "32"])
    assert (args.seconds, args.rounds, args.peers) == (1.0, 1, [8, 32])
    with pytest.raises(SystemExit):
        throughput.parse_args(["--peers", "7"])


@pytest.mark.parametrize("bad", [["--clients", "0"], ["--peers", "1", "--clients", "2"], ["--seconds", "0"]])
def test_disturbance_arguments(bad):
    disturbance = _load("disturbance")
    args = disturbance.parse_args(["--quick"])
    assert (args.seconds, args.peers, args.clients) == (3.0, 8, 2)
    with pytest.raises(SystemExit):
        disturbance.parse_args(bad)


def _fake_run(label: str) -> dict:
    summaries = {
        "latency": {
            "ratio_p50": 3.2,
            "p99_us": 4000.0,
            "p50_us": 1400.0,
            "baseline_p50_us": 430.0,
            "p99_us_": 0,
            "baseline_p99_us": 900.0,
            "cpu_us_per_trip": {"runtime": {"gateway": 260, "perception": 165, "decision": 360, "execution": 165}},
        },
        "throughput": {
            "ratio_8": 0.1,
            "ratio_32": 0.2,
            "ratio_128": 0.25,
            "configs": [
                {
                    "peers": 8,
                    "processes": 1,
                    "runtime_per_s": 2000.0,
                    "echo_per_s": 12000.0,
                    "ratio": 0.17,
                    "cpu_us_per_decision": {
                        "gateway": 150.0,
                        "perception": 76.0,
                        "decision": 150.0,
                        "execution": 100.0,
                        "clients": 120.0,
                    },
                }
            ],
        },
        "swap": {
            "swap_p50_ms": 3.0,
            "swap_p99_ms": 9.0,
            "rollback_p50_ms": 12.0,
            "dropped": 0,
            "delayed_by_swaps": 4,
            "ratio_p99": 1.2,
        },
        "memory": {
            "total_pss_mib": 540.0,
            "idle_total_pss_mib": 525.0,
            "total_rss_mib": 1100.0,
            "total_uss_mib": 360.0,
            "ratio_total_pss_to_goal": 1.35,
            "loaded": {"daemon": {"rss_mib": 58.0, "pss_mib": 36.0, "uss_mib": 34.0}},
            "idle": {"daemon": {"rss_mib": 58.0, "pss_mib": 36.0, "uss_mib": 34.0}},
        },
        "distiller": {"ratio": 0.6, "ratio_per_cpu": 0.9, "distiller_steps_per_s": 500.0, "bare_steps_per_s": 850.0},
    }
    scripts = [
        {
            "script": name,
            "exit_code": 0,
            "seconds": 10.0,
            "load_avg_before": [9.0, 9.0, 9.0],
            "load_avg_after": [10.0, 9.0, 9.0],
            "summary": summary,
        }
        for name, summary in summaries.items()
    ]
    scripts.append(
        {
            "script": "label_efficiency",
            "exit_code": 1,
            "seconds": 1.0,
            "load_avg_before": [1.0] * 3,
            "load_avg_after": [1.0] * 3,
            "summary": None,
            "error": "boom",
        }
    )
    machine = {
        "cpus": 2,
        "cpu_model": "test CPU",
        "memory_gib": 8.0,
        "python": "3.11",
        "platform": "Linux",
        "load_avg_start": [9.0, 9.0, 9.0],
        "load_avg_end": [10.0, 9.0, 9.0],
        "busy": True,
    }
    return {
        "label": label,
        "date": "2026-01-01 00:00 UTC",
        "command": "make bench",
        "machine": machine,
        "scripts": scripts,
    }


def test_run_all_writes_results_md_and_png_for_every_machine(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    run_all = _load("run_all")
    monkeypatch.setattr(run_all, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(run_all, "RESULTS_MD", tmp_path / "RESULTS.md")
    monkeypatch.setattr(run_all, "RESULTS_PNG", tmp_path / "results.png")
    monkeypatch.setattr(run_all, "HERE", tmp_path)
    (tmp_path / "results").mkdir()
    for label in ("2-core VM", "16-core box"):
        (tmp_path / "results" / f"{label.split()[0]}.json").write_text(json.dumps(_fake_run(label)))
    assert run_all.main(["--report-only"]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## 2-core VM" in text and "## 16-core box" in text
    assert "| throughput | `ratio_32` | 0.200 | ≥ 0.5× | **no** |" in text
    assert "busy, shared machine" in text and "failed" not in text.split("Per script")[0].split("|")[-1]
    assert "`label_efficiency`: 1.0 s, exit 1 — boom" in text
    assert (tmp_path / "results.png").stat().st_size > 10_000


def test_run_all_names_the_extra_when_matplotlib_is_missing(monkeypatch, capsys):
    run_all = _load("run_all")
    monkeypatch.setattr(run_all, "missing_matplotlib", lambda: True)
    assert run_all.main(["--report-only"]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "'bench' extra" in out[0]


def test_gpu_check_measures_the_cpu_and_says_why_the_gpu_half_is_skipped_without_cuda():
    import torch

    gpu = _load("gpu")
    chosen, name, skipped = gpu.placements()
    assert chosen[0] == ("cpu", "float32")
    if torch.cuda.is_available():
        assert name and skipped is None and ("cuda", "bfloat16") in chosen
    else:
        assert chosen == [("cpu", "float32")] and name is None and "torch.cuda.is_available() is false" in skipped


# --- end to end, opt-in ---------------------------------------------------------------------------
SMOKE = {
    "latency": ["p50_us", "p99_us", "baseline_p50_us", "ratio_p50", "cpu_us_per_trip", "gateway_cpu_us_per_hello"],
    "throughput": ["ratio_1", "ratio_8", "configs", "dropped"],
    "disturbance": ["ratio_poison", "ratio_teacher_stopped", "teacher_timeouts_poison", "phases", "dropped"],
    "swap": ["swap_p50_ms", "swap_p99_ms", "dropped", "delayed_by_swaps", "ratio_p99"],
    "memory": ["total_pss_mib", "idle_total_pss_mib", "total_rss_mib", "total_uss_mib", "loaded", "idle"],
    "distiller": ["ratio", "ratio_per_cpu", "distiller_steps_per_s", "bare_steps_per_s"],
    "gpu": ["teacher_us_per_obs", "teacher_burst", "distiller_steps_per_s", "gpu", "gpu_skipped"],
    "edge": ["edge_p50_us", "runtime_p50_us", "ratio_p50", "labels_per_episode", "promotion_to_edge_p50_ms"],
}
EXTRA_ARGS = {"throughput": ["--peers", "1", "8"]}


@pytest.mark.skipif(os.environ.get("BENCH_SMOKE") != "1", reason="set BENCH_SMOKE=1 (30-45 s each)")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_script_prints_its_json_keys_last(script):
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{script}.py"), "--quick", *EXTRA_ARGS.get(script, [])],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(SMOKE[script]) <= set(summary), sorted(summary)
    assert "machine" in summary or script == "latency"
