"""Human-readable views for the terminal (rich tables)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from runtime.learn.check import Check


def print_status(status: dict[str, Any]) -> None:
    console = Console()
    daemon = status["daemon"]
    console.print(
        f"daemon pid {daemon['pid']}  up {daemon['uptime_s']:.0f} s  run dir {daemon['run_dir']}  "
        f"peers at {daemon['peer_endpoint']} ({daemon.get('peer_security') or 'starting'})"
    )
    if daemon.get("peer_security") == "insecure":
        console.print(
            "[bold red]warning:[/] the peer endpoint is reachable from other hosts without CURVE: "
            "anyone who reaches it drives the agent (security.curve, agentrt keys)"
        )
    roles = Table("role", "pid", "state", "uptime s", "restarts", "last exit")
    for name, role in status["roles"].items():
        last_exit = "-" if role["last_exit_code"] is None else f"{role['last_exit_code']}: {role['last_exit_reason']}"
        remote = role.get("remote")
        where = str(role["pid"])
        if remote:
            where = f"remote {remote['host']}:{remote['pid']}" if remote["pid"] else "remote (not joined)"
        if remote and role["silent_s"] is not None:
            where += f" (seen {role['silent_s']:.1f} s ago)"
        roles.add_row(name, where, role["state"], f"{role['uptime_s']:.1f}", str(role["restarts"]), last_exit)
    console.print(roles)
    decisions = status["decisions"]
    summary = Table(
        "peers", "observations", "actions", "errors", "student version", "by student", "by teacher", "teacher queries"
    )
    summary.add_row(
        str(status["peers_connected"]),
        str(status["observations"]),
        str(status["actions"]),
        str(status["errors"]["total"]),
        str(status["student_version"]),
        str(decisions["by_student"]),
        str(decisions["by_teacher"]),
        str(status["teacher_queries"]),
    )
    console.print(summary)
    if status["distillation"]["disk_full"]:
        console.print("[red]disk full: the distiller holds new student versions until there is space again")
    if status["checkpoints_quarantined"] or status["registry_rebuilt"]:
        console.print(
            f"checkpoints quarantined {status['checkpoints_quarantined']} (in checkpoints/quarantine), "
            f"registry rebuilt {status['registry_rebuilt']} times (see the log)"
        )
    if status["errors"]["by_code"]:
        console.print("errors: " + ", ".join(f"{code} {count}" for code, count in status["errors"]["by_code"].items()))


def print_plugins(listing: dict[str, Any]) -> None:
    console = Console()
    plugins = Table("plugin", "distribution", "version", "origin", "hooks")
    for plugin in listing["plugins"]:
        # A plugin that implements nothing is almost always one whose functions lack @hookimpl.
        hooks = ", ".join(plugin["hooks"]) or "[yellow]none: are its functions marked @hookimpl?"
        plugins.add_row(plugin["name"], plugin["distribution"], plugin["version"], plugin["origin"], hooks)
    console.print(plugins)
    points = Table("extension point", "available (plugin)", "selected")
    for point, entry in listing["extension_points"].items():
        available = ", ".join(f"{name} ({plugin})" for name, plugin in entry["available"].items())
        points.add_row(point, available, ", ".join(entry["selected"]))
    console.print(points)


def params_markdown(listing: dict[str, Any]) -> str:
    """Every listed component's parameters as Markdown tables, one per extension point (the
    section of docs/plugins.md that ``agentrt plugins --markdown`` regenerates)."""
    lines: list[str] = []
    for point, entry in listing["extension_points"].items():
        lines += [
            f"### {point} (`{entry['config']}`)",
            "",
            "| component | parameter | default | must be | what it does |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, component in entry["components"].items():
            params = component["params"]
            if not params:
                lines.append(f"| `{name}` | {'(not declared)' if params is None else '(none)'} | | | |")
            for param in params or []:
                default = "unset" if param["default"] is None else f"`{json.dumps(param['default'])}`"
                lines.append(f"| `{name}` | `{param['name']}` | {default} | {param['constraint']} | {param['doc']} |")
        lines.append("")
    return "\n".join(lines)


def print_students(versions: list[dict[str, Any]], serving: int) -> None:
    table = Table("version", "parent", "status", "samples", "train steps", "held-out agreement", "vs serving then", "")
    for v in versions:

        def fmt(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f}"

        table.add_row(
            str(v["version"]),
            str(v["parent"] or "-"),
            v["status"],
            str(v["samples_seen"]),
            str(v["train_steps"]),
            fmt(v["heldout_agreement"]),
            fmt(v["serving_agreement"]),
            "← serving" if v["version"] == serving else "",
        )
    Console().print(table)


def print_checks(checks: list[Check]) -> None:
    table = Table("extension points", "components", "result")
    for check in checks:
        table.add_row(
            ", ".join(check.points), ", ".join(check.components) or "-", "ok" if check.ok else f"[red]{check.error}"
        )
    Console().print(table)


def print_compressed(report: dict[str, Any]) -> None:
    """``agentrt student compress``: the new version beside the one it was made from."""
    how = report["compression"]
    table = Table("version", "student", "bytes", "weight bytes", "params ≠ 0", "µs/decision", "held-out agreement")
    for version, student, figures in (
        (report["parent"], f"float {how['hidden_before']}", report["original"]),
        (report["version"], f"{'int8' if how['int8'] else 'float'} {how['hidden']}", report["compressed"]),
    ):
        agreement = figures["agreement"]
        table.add_row(
            str(version),
            student,
            str(figures["bytes"]),
            str(figures["weight_bytes"]),
            str(figures["params"]),
            f"{figures['latency_us']:.1f}",
            "-" if agreement is None else f"{agreement:.3f}",
        )
    console = Console()
    console.print(table)
    serving = report["serving_agreement"]
    console.print(
        f"version {report['version']} {report['status']} by the gate: serving version {report['serving_version']} "
        f"agrees {'-' if serving is None else f'{serving:.3f}'}, margin {report['promotion_margin']}"
    )
