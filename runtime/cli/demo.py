"""``agentrt demo``: online distillation on CartPole-v1, end to end, with the default configuration.

A private daemon starts; Gymnasium peers attach with an untrained student; the student learns
from the teacher while it acts; then it is evaluated acting alone, and a summary compares it
with the teacher.

``agentrt demo --edge``: the same with edge peers (``runtime.peer.edge``). Each runs its own copy
of the student from the start, sends the observations its local query policy picks for labels,
and takes each promoted version as the runtime pushes it; the summary adds the edge decision
latency and the size of the exported student.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.live import Live
from rich.table import Table

from runtime import config as config_module
from runtime import extras
from runtime.config import Settings
from runtime.errors import ExitCode
from runtime.peer.edge import EdgeQuery
from runtime.peer.gym import AttachSummary, EpisodeResult, run_edge_gym_peers, run_gym_peers
from runtime.supervisor.launch import ChildDaemon

ENV_ID = "CartPole-v1"
TARGET_RETURN = 475.0
WINDOW = 12  # recent episodes that must look good before the student is evaluated alone
#: The edge peers' control loop, as a robot's: it paces how fast they ask for labels.
EDGE_STEP_HZ = 500.0


@dataclass
class Progress:
    started: float = field(default_factory=time.monotonic)
    phase: str = "starting"
    episodes: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    history: list[tuple[float, float, float]] = field(default_factory=list)  # (t, return, teacher share)
    evaluations: list[float] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    edge_mode: bool = False  # --edge
    edge_steps: int = 0  # steps the edge peers took (the runtime sees only their labels)
    edge: dict[str, Any] = field(default_factory=dict)  # the last evaluation's edge figures

    def record(self, episode: EpisodeResult) -> None:
        self.episodes.append(episode)
        self.edge_steps += episode.steps if self.edge_mode else 0
        self.history.append(
            (time.monotonic() - self.started, episode.episode_return, episode.by_teacher / episode.steps)
        )

    def ready_for_evaluation(self) -> bool:
        if len(self.episodes) < WINDOW:
            return False
        steps = sum(e.steps for e in self.episodes)
        teacher_share = sum(e.by_teacher for e in self.episodes) / steps
        return min(e.episode_return for e in self.episodes) >= TARGET_RETURN and teacher_share <= 0.05

    def table(self) -> Table:
        status = self.status
        decisions = status.get("decisions", {})
        observations = max(status.get("observations", 0), 1)
        episodes, teacher_acts = (
            status.get("episodes", 0),
            decisions.get("by_teacher", 0) / max(decisions.get("total", 0), 1),
        )
        if self.edge_mode:  # the student acts at the edge; the runtime sees the labels only
            episodes, teacher_acts, observations = len(self.history), 0.0, max(self.edge_steps, 1)
        recent = [e.episode_return for e in self.episodes]
        mode = ", edge peers" if self.edge_mode else ""
        table = Table(title=f"agentrt demo: online distillation on {ENV_ID}{mode}", title_justify="left")
        # Short headers: the table must fit an 80-column terminal.
        for column in (
            "time",
            "phase",
            "student",
            "agrees",
            "episodes",
            "return",
            f"mean/{WINDOW}",
            "T acts",
            "T asked",
        ):
            table.add_column(column, justify="right")
        agreement = status.get("distillation", {}).get("agreement")
        table.add_row(
            f"{time.monotonic() - self.started:.0f} s",
            self.phase,
            f"v{status.get('student_version', 0)}",
            "-" if agreement is None else f"{agreement:.1%}",
            str(episodes),
            f"{recent[-1]:.0f}" if recent else "-",
            f"{statistics.mean(recent):.0f}" if recent else "-",
            f"{teacher_acts:.1%}",
            f"{status.get('teacher_queries', 0) / observations:.1%}",
        )
        return table


def run_demo(args: argparse.Namespace) -> int:
    console = Console(stderr=args.json)
    try:
        if args.plot:
            extras.require("matplotlib", "bench", "--plot (--plot '' for none)")
        if args.edge:  # the summary exports the student as ONNX too
            extras.require("onnx", "export", "--edge")
    except extras.MissingExtra as exc:
        print(f"agentrt demo: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    config = config_module.load(getattr(args, "config", None))
    progress = Progress(edge_mode=args.edge)
    daemon = ChildDaemon(config_path=getattr(args, "config", None))
    succeeded = False
    try:
        daemon.wait_ready()
        with Live(progress.table(), console=console, refresh_per_second=4, transient=False) as live:
            student_returns = train_and_evaluate(daemon, args, progress, live)
        # Before the daemon stops: the summary reads the serving checkpoint from its run directory.
        summary = summarize(config, daemon, daemon.status(), student_returns, progress)
        succeeded = True
    finally:
        daemon.stop(remove_run_dir=succeeded)  # kept when the demo fails, for its log
        if not succeeded:
            console.print(f"[red]demo failed; daemon log: {daemon.log_path}")
    if args.plot:
        write_plot(progress, args.plot)
        summary["plot"] = args.plot
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(console, summary)
    return ExitCode.OK if summary["student_mean_return"] >= TARGET_RETURN else ExitCode.FAILURE


def train_and_evaluate(daemon: ChildDaemon, args: argparse.Namespace, progress: Progress, live: Live) -> list[float]:
    """Train until the recent episodes look good, evaluate the student alone; repeat while it falls short."""
    deadline = progress.started + args.max_train_s
    seed = 0
    while True:
        progress.phase = "learning"
        stop = threading.Event()
        play: dict[str, Any] = dict(
            endpoint=daemon.endpoint,
            env_id=ENV_ID,
            episodes=10**9,
            peers=args.peers,
            seed=seed,
            on_episode=progress.record,
            should_stop=stop.is_set,
        )
        if args.edge:
            play.update(query=EdgeQuery(seed=seed), step_hz=EDGE_STEP_HZ)
        # Ctrl-C must not wait for it
        worker = threading.Thread(target=run_edge_gym_peers if args.edge else run_gym_peers, kwargs=play, daemon=True)
        worker.start()
        try:
            while worker.is_alive() and not progress.ready_for_evaluation() and time.monotonic() < deadline:
                progress.status = daemon.status()
                live.update(progress.table())
                time.sleep(0.25)
        finally:
            stop.set()
            worker.join()
        progress.phase = "evaluating"
        live.update(progress.table())
        evaluation = evaluate(daemon.endpoint, args, seed)
        progress.edge = evaluation.as_dict().get("edge", {})
        returns = [e.episode_return for e in evaluation.episodes]
        progress.evaluations.append(float(np.mean(returns)))
        progress.status = daemon.status()
        progress.phase = f"eval={np.mean(returns):.0f}"
        live.update(progress.table())
        if np.mean(returns) >= TARGET_RETURN or time.monotonic() >= deadline:
            return returns
        progress.episodes.clear()
        seed += 1000


def evaluate(endpoint: str, args: argparse.Namespace, seed: int) -> AttachSummary:
    """The student alone: forced by the runtime, or at the edge without labels."""
    if args.edge:
        return run_edge_gym_peers(endpoint, ENV_ID, args.eval_episodes, args.peers, seed=10_000 + seed)
    return run_gym_peers(endpoint, ENV_ID, args.eval_episodes, args.peers, policy="student", seed=10_000 + seed)


def bare_latency_us(policy, observations: np.ndarray, repeats: int = 200) -> float:
    """Median time of one single-observation decision, outside the runtime."""
    timings = []
    for index in range(repeats):
        started = time.perf_counter()
        policy(observations[index % len(observations)][None])
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


def summarize(
    config: dict[str, Any],
    daemon: ChildDaemon,
    status: dict[str, Any],
    student_returns: list[float],
    progress: Progress,
) -> dict[str, Any]:
    import gymnasium
    import torch

    from runtime.learn.checkpoints import CheckpointStore, load_safetensors
    from runtime.learn.models import build_student, build_teacher
    from runtime.plugin import pluginmanager
    from runtime.wire.spaces import agent_spaces

    torch.set_num_threads(1)
    settings = Settings.of(config)
    plugins = pluginmanager.load(settings.plugins.table())
    observation_space, action_space = agent_spaces(settings.agent.table())
    teacher = build_teacher(plugins, settings, observation_space, action_space)
    student = build_student(plugins, settings, observation_space, action_space).eval()
    store = CheckpointStore(daemon.run_dir / "checkpoints")
    student.load_state_dict(load_safetensors(store.path(status["student_version"]))[0])

    def student_policy(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return student(torch.as_tensor(obs, dtype=torch.float32)).numpy()

    env = gymnasium.make(ENV_ID)
    teacher_returns: list[float] = []
    visited: list[np.ndarray] = []
    for episode in range(len(student_returns)):
        obs, _ = env.reset(seed=20_000 + episode)
        total, done = 0.0, False
        while not done:
            visited.append(obs)
            obs, reward, terminated, truncated, _ = env.step(int(teacher.label(obs[None]).argmax()))
            total += float(reward)
            done = terminated or truncated
        teacher_returns.append(total)
    states = np.asarray(visited, dtype=np.float32)
    teacher_params = sum(p.numel() for p in teacher.module.parameters()) if hasattr(teacher, "module") else None
    observations = max(status["observations"], 1)
    return {
        "env": ENV_ID,
        "student_mean_return": float(np.mean(student_returns)),
        "student_returns": student_returns,
        "teacher_mean_return": float(np.mean(teacher_returns)),
        "teacher_query_fraction": status["teacher_queries"] / observations,
        "teacher_queries": status["teacher_queries"],
        "steps": status["observations"],
        "decided_by_teacher": status["decisions"]["by_teacher"],
        "student_version": status["student_version"],
        "student_params": sum(p.numel() for p in student.parameters()),
        "teacher_params": teacher_params,
        "student_latency_us": bare_latency_us(student_policy, states),
        "teacher_latency_us": bare_latency_us(teacher.label, states),
        "evaluations": progress.evaluations,
        "duration_s": round(time.monotonic() - progress.started, 1),
        **(edge_summary(config, daemon, status, progress) if progress.edge_mode else {}),
    }


def edge_summary(
    config: dict[str, Any], daemon: ChildDaemon, status: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """The edge figures: the edge peers' decision latency, and the serving student exported as an
    edge peer receives it (the array layout) and as ONNX, in bytes."""
    import tempfile
    from pathlib import Path

    from runtime.learn.export import LAYOUT, ONNX, Exporter, layout_json_path
    from runtime.plugin import pluginmanager

    settings = Settings.of(config_module.merge(config, {"daemon": {"run_dir": str(daemon.run_dir)}}, "demo"))
    exporter = Exporter(settings, pluginmanager.load(settings.plugins.table()))
    sizes = {}
    with tempfile.TemporaryDirectory() as directory:
        for fmt, name in ((LAYOUT, "student.safetensors"), (ONNX, "student.onnx")):
            exported = exporter.write(fmt, Path(directory) / name, status["student_version"])
            sizes[fmt] = exported.size_bytes
            if fmt == LAYOUT:
                sizes["json"] = layout_json_path(exported.path).stat().st_size
    return {
        "edge_latency_us": progress.edge.get("decision_us_p50"),
        "edge_labels_sent": status["roles"]["gateway"]["counters"].get("edge_labels", 0),
        "edge_steps": progress.edge_steps,
        "exported_bytes": sizes,
    }


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    console.print()
    table = Table(title="summary", title_justify="left")
    for column in ("", "parameters", "µs per decision", "mean return"):
        table.add_column(column, justify="right")
    table.add_row(
        "teacher",
        f"{summary['teacher_params']:,}",
        f"{summary['teacher_latency_us']:.0f}",
        f"{summary['teacher_mean_return']:.1f}",
    )
    table.add_row(
        "student",
        f"{summary['student_params']:,}",
        f"{summary['student_latency_us']:.0f}",
        f"{summary['student_mean_return']:.1f}",
    )
    if "edge_latency_us" in summary:
        table.add_row(
            "student at the edge",
            f"{summary['student_params']:,}",
            f"{summary['edge_latency_us']:.0f}",
            f"{summary['student_mean_return']:.1f}",
        )
    console.print(table)
    if "exported_bytes" in summary:
        sizes = summary["exported_bytes"]
        console.print(
            f"exported student: {sizes['safetensors+json']:,} bytes as safetensors (+ {sizes['json']:,} bytes of "
            f"JSON), {sizes['onnx']:,} bytes as ONNX; the edge peers sent {summary['edge_labels_sent']:,} labels "
            f"over {summary['edge_steps']:,} steps while learning"
        )
    # At the edge the runtime answers labels only: its steps are not the peers'.
    queried = (
        ""
        if "edge_steps" in summary
        else (
            f"teacher queried for {summary['teacher_queries']:,} of {summary['steps']:,} steps "
            f"({summary['teacher_query_fraction']:.1%}); "
        )
    )
    console.print(
        f"{queried}student v{summary['student_version']} evaluated alone over "
        f"{len(summary['student_returns'])} episodes; {summary['duration_s']:.0f} s in all"
    )
    if "plot" in summary:
        console.print(f"learning curve: {summary['plot']}")


def write_plot(progress: Progress, path: str) -> None:
    import matplotlib  # required when the demo starts

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times, returns, shares = zip(*progress.history, strict=True) if progress.history else ((), (), ())
    figure, axis = plt.subplots(figsize=(8, 4))
    who = "the student at the edge" if progress.edge_mode else "student + cascade"
    axis.plot(times, returns, ".", alpha=0.5, label=f"episode return ({who})")
    axis.set_xlabel("seconds")
    axis.set_ylabel("return")
    twin = axis.twinx()
    twin.plot(times, shares, color="tab:red", alpha=0.6, label="teacher share of decisions")
    twin.set_ylabel("teacher share")
    twin.set_ylim(0, 1)
    figure.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
