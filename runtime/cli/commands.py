"""The ``agentrt`` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runtime import config as config_module
from runtime import rundir
from runtime.config import REMOTE_CAPABLE, Settings, internal_network, peer_security
from runtime.errors import AgentrtError, ConfigError, DaemonError, DaemonUnreachable, ExitCode, PeerTimeout
from runtime.files import atomic_write
from runtime.processes import SAFE_PATH_ENV
from runtime.supervisor import control
from runtime.wire.keys import KeyStore


def _load_config(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, dict[str, Any]] = {}
    if getattr(args, "run_dir", None):
        overrides.setdefault("daemon", {})["run_dir"] = str(Path(args.run_dir).absolute())
    if getattr(args, "log_format", None):
        overrides.setdefault("daemon", {})["log_format"] = args.log_format
    if getattr(args, "peer_endpoint", None):
        overrides.setdefault("daemon", {})["peer_endpoint"] = args.peer_endpoint
    if getattr(args, "insecure", False):
        overrides.setdefault("security", {})["insecure"] = True
    return config_module.load(getattr(args, "config", None), overrides=overrides)


def _daemon_run_dir(args: argparse.Namespace) -> Path:
    """The run directory of the daemon a command talks to: ``--run-dir``, else the configuration's.
    A configuration that no longer loads (a typo made since the daemon started) warns, and
    ``daemon.run_dir`` is read alone: it must not keep its user from stopping the daemon."""
    if args.run_dir:
        run_dir = Path(args.run_dir).absolute()
    else:
        try:
            run_dir = Path(_load_config(args)["daemon"]["run_dir"])
        except ConfigError as exc:
            run_dir = Path(config_module.find_run_dir(args.config))
            print(f"agentrt {_command_name(args)}: warning: configuration error: {exc}", file=sys.stderr)
            print(f"agentrt {_command_name(args)}: warning: using run directory {run_dir}", file=sys.stderr)
    rundir.refuse_file(run_dir)
    return run_dir


def _command_name(args: argparse.Namespace) -> str:
    """``attach gym``, ``student list``: the words that chose the handler, for the prefix of its messages."""
    return " ".join(getattr(args, dest) for dest in _SUBCOMMAND_DESTS if getattr(args, dest, None))


#: Where the parser puts the subcommand at each level (``add_subparsers(dest=...)``).
_SUBCOMMAND_DESTS = (
    "command",
    "config_command",
    "attach_command",
    "keys_command",
    "student_command",
    "teacher_command",
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _add_common(parser: argparse.ArgumentParser, run_dir: bool = True) -> None:
    parser.add_argument("--config", help="configuration file (default: $AGENTRT_CONFIG or ./agentrt.toml)")
    if run_dir:
        parser.add_argument("--run-dir", help="run directory (default: $AGENTRT_RUN_DIR or daemon.run_dir)")


def _add_joining(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--connect",
        required=required,
        metavar="tcp://DAEMON-HOST:PORT",
        help="the daemon's internal.endpoints: join it as its role",
    )
    parser.add_argument("--server-key", help="CURVE: the runtime's public key file (server.key)")
    parser.add_argument(
        "--client-key", help="CURVE: this role's key pair (NAME.key_secret; keys authorize --role there)"
    )
    parser.add_argument(
        "--heartbeat-file",
        metavar="PATH",
        help="touch PATH at every heartbeat (removed on exit): `agentrt heartbeat PATH` is a liveness probe",
    )


# --- up / down / status ------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    from runtime.plugin.pluginmanager import describe
    from runtime.supervisor.daemon import Daemon, prepare_run_dir
    from runtime.wire.spaces import agent_spaces

    config = _load_config(args)
    settings = Settings.of(config)
    run_dir = Path(settings.daemon.run_dir)
    rundir.refuse_file(run_dir)
    if rundir.in_use(run_dir):  # before the checks below, which take seconds: they could not help
        raise rundir.in_use_error(run_dir)
    describe(config)  # every plugin imports and every selected component exists: fail now, not in a role
    if peer_security(settings) == "curve":
        settings.security.keys().server_secret()  # exists and reads, or a ConfigError now
    internal_network(settings)  # the same for the internal endpoints' keys, and their exposure
    try:
        agent_spaces(settings.agent.table())
    except ConfigError as exc:
        # Keys that parse but name no workable agent (an unknown env): no role could start, as with a plugin.
        print(f"agentrt up: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    if args.check:
        from runtime.learn.check import causes, check_components
        from runtime.learn.device import check_placements
        from runtime.plugin.pluginmanager import load

        # A device (or dtype) this host cannot run fails now, naming the key. Here, not above: it
        # imports torch, which the daemon itself (--no-check, as --detach starts it) never does.
        check_placements(settings)

        failures = causes(check_components(load(settings.plugins.table()), settings))
        for failure in failures:
            print(f"agentrt up: {failure}", file=sys.stderr)
        if failures:
            return ExitCode.CONFIG
    if not args.detach:
        daemon = Daemon(config)
        code = daemon.run()
        if code and daemon.exit_reason:  # the log has it too; the terminal that started it should see it
            print(f"agentrt up: {rundir.one_line(daemon.exit_reason)}", file=sys.stderr)
        return code
    prepare_run_dir(run_dir)
    command = [sys.executable, "-m", "runtime", "up", "--run-dir", str(run_dir), "--no-check"]  # checked above
    for flag, value in (
        ("--config", args.config),
        ("--log-format", args.log_format),
        ("--peer-endpoint", args.peer_endpoint),
    ):
        if value:
            command += [flag, value]
    if args.insecure:
        command.append("--insecure")
    with rundir.writing(run_dir):
        # The daemon writes it too, but a detached daemon could tell a full disk only to its log,
        # which a full disk cannot hold: fail here, in one line.
        atomic_write(run_dir / rundir.CONFIG_SNAPSHOT, json.dumps(config).encode())
        log_file = open(run_dir / rundir.LOG_FILE, "ab")  # noqa: SIM115 (closed once the daemon has it)
    with log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            env={**os.environ, **SAFE_PATH_ENV},
        )
    return _wait_until_serving(process, run_dir, args.wait)


def _wait_until_serving(process: subprocess.Popen, run_dir: Path, wait_s: float) -> int:
    """Return once every role of the detached daemon runs, or it stopped (with its reason), or on timeout."""
    log_path = run_dir / rundir.LOG_FILE
    deadline = time.monotonic() + wait_s
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stopped = rundir.read_daemon_exit(run_dir)
            reason = stopped["reason"] if stopped else f"the daemon exited with code {process.returncode}"
            print(f"agentrt up: {reason}\nagentrt up: see {log_path}", file=sys.stderr)
            return process.returncode or ExitCode.FAILURE
        try:
            status = control.request(run_dir, "status", timeout_s=1.0)
        except DaemonError:
            time.sleep(0.1)
            continue
        failed = {name: role for name, role in status["roles"].items() if role["state"] == "failed"}
        if failed:
            for name, role in failed.items():
                print(
                    f"agentrt up: {name} failed (exit {role['last_exit_code']}: {role['last_exit_reason']}); "
                    f"the daemon (pid {process.pid}) serves without it",
                    file=sys.stderr,
                )
            return ExitCode.CONFIG
        if not control.waiting_for(status):
            print(
                json.dumps(
                    {
                        "pid": process.pid,
                        "run_dir": str(run_dir),
                        "log": str(log_path),
                        "peer_endpoint": status["daemon"]["peer_endpoint"],
                    }
                )
            )
            return ExitCode.OK
        time.sleep(0.1)
    waiting = {name: status["roles"][name] for name in control.waiting_for(status)} if status else {}
    print(
        f"agentrt up: the daemon (pid {process.pid}) is still starting after {wait_s:g} s; 'agentrt down' stops it",
        file=sys.stderr,
    )
    for name, role in (waiting or {"daemon": {"state": "not answering"}}).items():
        why = (
            f" (last exit {role['last_exit_code']}: {role['last_exit_reason']})" if role.get("last_exit_reason") else ""
        )
        print(f"agentrt up:   {name}: {role['state']}{why}", file=sys.stderr)
    print(f"agentrt up: see {log_path}", file=sys.stderr)
    return ExitCode.TIMEOUT


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the daemon and return only once it and every process it reported are gone."""
    from runtime.processes import wait_for_exit

    run_dir = _daemon_run_dir(args)
    deadline = time.monotonic() + args.wait  # asking included: --wait is the whole command's
    pid = rundir.read_pid(run_dir)
    try:
        pids = control.request(run_dir, "down", timeout_s=min(3.0, max(args.wait / 2, 0.1)))["pids"]
    except DaemonUnreachable:
        if pid is None:
            raise
        os.kill(pid, signal.SIGTERM)  # the daemon is alive but not answering: ask the OS instead (its roles follow it)
        pids = [pid]
    remaining = wait_for_exit(pids, max(deadline - time.monotonic(), 0.0))
    if not remaining:
        print(json.dumps({"stopped": pids[0], "pids": pids}))
        return ExitCode.OK
    print(f"agentrt down: still running after {args.wait:g} s: pids {', '.join(map(str, remaining))}", file=sys.stderr)
    return ExitCode.TIMEOUT


def cmd_status(args: argparse.Namespace) -> int:
    run_dir = _daemon_run_dir(args)
    try:
        status = control.request(run_dir, "status")
    except DaemonUnreachable as exc:
        stopped, dead = rundir.read_daemon_exit(run_dir), rundir.dead_pid(run_dir)
        if args.json:  # a script reads stdout: the same facts as the message below, as JSON
            print(json.dumps({"running": False, "run_dir": str(run_dir), "last_exit": stopped, "killed_pid": dead}))
        if stopped:
            raise DaemonUnreachable(
                f"{exc}\nit last stopped with exit code {stopped['code']}: {stopped['reason']}"
            ) from None
        if dead is not None:
            raise DaemonUnreachable(
                f"{exc}\nits last daemon (pid {dead}) ended without stopping: it was killed, or crashed "
                f"(see {run_dir / rundir.LOG_FILE}); the next 'agentrt up' there cleans up after it"
            ) from None
        raise
    if args.json:
        print(json.dumps({"running": True, **status}))
    else:
        from runtime.cli.display import print_status

        print_status(status)
    if args.ready:
        # Ready: every role serves. A daemon that answers while a role restarts is alive, not ready.
        waiting = control.waiting_for(status)
        if waiting:
            print("agentrt status: not ready: " + ", ".join(f"{n} {s}" for n, s in waiting.items()), file=sys.stderr)
            return ExitCode.FAILURE
    return ExitCode.OK


def cmd_config_show(args: argparse.Namespace) -> int:
    config = _load_config(args)
    print(json.dumps(config, indent=2) if args.json else config_module.to_toml(config, annotate=args.annotate))
    return ExitCode.OK


# --- keys ---------------------------------------------------------------------------------------------
def _key_store(args: argparse.Namespace) -> KeyStore:
    return Settings.of(_load_config(args)).security.keys()


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from runtime.wire.keys import generate_client

    if args.client:
        public, secret = generate_client(args.out, args.client)
        print(f"{public}\n{secret}")
        print(
            f"give {public} to the runtime's operator (agentrt keys authorize); keep {secret} private", file=sys.stderr
        )
        return ExitCode.OK
    print(_key_store(args).generate_server())
    return ExitCode.OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    from runtime.wire.keys import fingerprint

    store = _key_store(args)
    server = store.directory / "server.key"
    authorized = {name: fingerprint(key) for name, key in store.authorized().items()}
    roles = {name: fingerprint(key) for name, key in store.authorized(role=True).items()}
    if args.json:
        print(
            json.dumps(
                {"keys_dir": str(store.directory), "server": server.exists(), "authorized": authorized, "roles": roles}
            )
        )
        return ExitCode.OK
    print(f"keys in {store.directory}; server key pair: {'yes' if server.exists() else 'no (agentrt keys generate)'}")
    for name, print_ in authorized.items():
        print(f"  {name}  {print_}")
    for name, print_ in roles.items():
        print(f"  {name}  {print_}  (remote role)")
    return ExitCode.OK


def cmd_keys_authorize(args: argparse.Namespace) -> int:
    name = args.name or Path(args.key_file).name.split(".key")[0]
    print(_key_store(args).authorize(args.key_file, name, role=args.role))
    return ExitCode.OK


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    _key_store(args).revoke(args.name, role=args.role)
    return ExitCode.OK


# --- peers and demo ------------------------------------------------------------------------------------
def cmd_attach_gym(args: argparse.Namespace) -> int:
    import gymnasium

    from runtime.peer.edge import EdgeQuery
    from runtime.peer.gym import run_edge_gym_peers, run_gym_peers

    try:
        gymnasium.spec(args.env_id)
    except gymnasium.error.Error as exc:
        raise ConfigError(f"{args.env_id}: {exc}") from None
    if not args.edge:
        edge_only = [flag for flag in ("labels_per_s", "transitions", "step_hz") if getattr(args, flag) is not None]
        if edge_only:
            raise ConfigError(f"--{edge_only[0].replace('_', '-')} applies to the edge mode only: add --edge")
    elif args.policy == "teacher":
        raise ConfigError(
            "--edge --policy teacher: at the edge the peer's student acts; --policy auto asks the teacher "
            "for labels where the student is unsure, --policy student asks for none"
        )
    endpoint, serving = args.endpoint, None
    if endpoint is None:
        try:  # the daemon of the run directory says where it serves: --peer-endpoint may have moved it
            serving = control.request(_daemon_run_dir(args), "status")["daemon"]
            endpoint = serving["peer_endpoint"]
        except DaemonError:
            endpoint = _load_config(args)["daemon"]["peer_endpoint"]

    def report(episode):
        if not args.json:
            print(
                f"peer {episode.peer}: return {episode.episode_return:.1f} in {episode.steps} steps "
                f"(teacher decided {episode.by_teacher}, student v{episode.student_version})",
                flush=True,
            )

    curve = None
    if args.server_key or args.client_key:
        from runtime.wire.keys import ClientKeys

        if not (args.server_key and args.client_key):
            raise ConfigError("CURVE needs both --server-key (the runtime's server.key) and --client-key")
        curve = ClientKeys.from_files(args.server_key, args.client_key)
    elif serving is not None and serving.get("peer_security") == "curve":
        raise ConfigError(
            f"the runtime at {endpoint} admits CURVE peers only: pass --server-key (its server.key) and "
            "--client-key (a key pair it authorized: agentrt keys generate --client NAME, agentrt keys authorize)"
        )
    common: dict[str, Any] = dict(
        endpoint=endpoint,
        env_id=args.env_id,
        episodes=args.episodes,
        peers=args.peers,
        seed=args.seed,
        wait_s=args.wait,
        on_episode=report,
        curve=curve,
    )
    try:
        if args.edge:
            # Unset flags keep the defaults of EdgeQuery and run_edge_gym_peers, which the help repeats.
            budget = {} if args.labels_per_s is None else {"per_second": args.labels_per_s}
            transitions = {} if args.transitions is None else {"transitions": args.transitions}
            summary = run_edge_gym_peers(
                **common,
                **transitions,
                query=EdgeQuery(seed=args.seed, **budget) if args.policy == "auto" else None,
                format=args.edge_format,
                step_hz=args.step_hz,
            )
        else:
            summary = run_gym_peers(**common, policy=args.policy)
    except PeerTimeout as exc:
        hint = "" if curve else " A runtime that requires CURVE is silent to peers without --server-key, --client-key."
        raise PeerTimeout(f"{exc}. Is its daemon up (agentrt status)?{hint}") from None
    result = summary.as_dict()
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['episodes']} episodes, mean return {result['mean_return']:.1f}; "
            f"{result['steps']} steps played (unfinished episodes' included), "
            f"student decided {result['decided_by_student']}, teacher {result['decided_by_teacher']}"
        )
        if "edge" in result:
            edge = result["edge"]
            print(
                f"edge: {edge['labels_sent']} labels sent, versions {edge['versions']}, "
                f"decision p50 {edge['decision_us_p50']} µs"
            )
    return ExitCode.OK


def cmd_demo(args: argparse.Namespace) -> int:
    from runtime.cli.demo import run_demo

    return run_demo(args)


def _check(config: dict[str, Any], as_json: bool) -> int:
    """Build and run one step of every selected component; CONFIG if any fails (each named)."""
    from runtime.cli.display import print_checks
    from runtime.learn.check import check_components
    from runtime.plugin.pluginmanager import load

    settings = Settings.of(config)
    checks = check_components(load(settings.plugins.table()), settings)
    if as_json:
        print(json.dumps([check.as_dict() for check in checks]))
    else:
        print_checks(checks)
    return ExitCode.OK if all(check.ok for check in checks) else ExitCode.CONFIG


def cmd_plugins(args: argparse.Namespace) -> int:
    from runtime.cli.display import params_markdown, print_plugins
    from runtime.plugin.pluginmanager import describe

    config = _load_config(args)
    listing = describe(config)
    if args.check:
        return _check(config, args.json)
    if args.json:
        print(json.dumps(listing))
    elif args.markdown:
        print(params_markdown(listing))
    else:
        print_plugins(listing)
    return ExitCode.OK


def cmd_student_list(args: argparse.Namespace) -> int:
    import sqlite3

    from runtime.learn.registry import FILE_NAME, Registry

    run_dir = Path(_load_config(args)["daemon"]["run_dir"])
    if not (run_dir / FILE_NAME).exists():
        print(f"agentrt student list: no student registry in {run_dir}", file=sys.stderr)
        return ExitCode.FAILURE
    registry = Registry(run_dir, readonly=True)  # RegistryDamaged: main() prints it in one line
    try:
        versions, serving = [v.as_dict() for v in registry.versions()], registry.serving()
    except sqlite3.OperationalError as exc:
        print(f"agentrt student list: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    finally:
        registry.close()
    if args.json:
        print(json.dumps({"serving": serving, "versions": versions}))
    else:
        from runtime.cli.display import print_students

        print_students(versions, serving)
    return ExitCode.OK


def cmd_student_rollback(args: argparse.Namespace) -> int:
    from runtime.wire.transport import DISTILLATION_CONTROL

    result = control.request(
        _daemon_run_dir(args),
        "rollback",
        args={"to": args.to} if args.to is not None else {},
        endpoint=DISTILLATION_CONTROL,
        timeout_s=10,
    )
    print(json.dumps(result))
    return ExitCode.OK


def cmd_student_export(args: argparse.Namespace) -> int:
    from runtime.learn.export import export_student
    from runtime.plugin import pluginmanager

    settings = Settings.of(_load_config(args))
    plugins = pluginmanager.load(settings.plugins.table())
    exported = export_student(settings, plugins, args.format, args.out, args.version)
    print(
        json.dumps(
            {
                "path": str(exported.path),
                "format": exported.format,
                "version": exported.version,
                "size_bytes": exported.size_bytes,
            }
        )
    )
    return ExitCode.OK


def cmd_student_compress(args: argparse.Namespace) -> int:
    from runtime.learn.compress import Compression, compress

    compression = Compression(int8=args.int8, prune=args.prune, finetune_steps=args.finetune_steps)
    report = compress(_load_config(args), compression, args.version)
    if args.json:
        print(json.dumps(report))
    else:
        from runtime.cli.display import print_compressed

        print_compressed(report)
    return ExitCode.OK if report["promoted"] else ExitCode.FAILURE


def cmd_teacher_serve(args: argparse.Namespace) -> int:
    from runtime.roles.teacher import TeacherRole

    if args.connect:
        args.role = "teacher"
        return cmd_role(args)
    return TeacherRole(
        _load_config(args), supervised=False, endpoint=args.endpoint, heartbeat_file=args.heartbeat_file
    ).run()


def cmd_heartbeat(args: argparse.Namespace) -> int:
    """Whether a role's loop still runs on this host: its heartbeat file is fresh."""
    if not args.max_age > 0:
        print(f"agentrt heartbeat: --max-age must be a positive number of seconds: {args.max_age:g}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        age = time.time() - os.stat(args.path).st_mtime
    except FileNotFoundError:
        print(f"agentrt heartbeat: {args.path}: no heartbeat (no such file: the role has not started its loop)")
        return ExitCode.FAILURE
    if age > args.max_age:
        print(f"agentrt heartbeat: {args.path}: last heartbeat {age:.1f} s ago (more than {args.max_age:g} s)")
        return ExitCode.FAILURE
    print(f"agentrt heartbeat: {args.path}: last heartbeat {max(age, 0.0):.1f} s ago")
    return ExitCode.OK


def cmd_role(args: argparse.Namespace) -> int:
    """Run one role on this host for a daemon on another: it dials the daemon's TCP internal
    endpoints (``--connect`` is internal.endpoints there) and joins its supervision."""
    import importlib

    from runtime.roles import ROLE_MODULES

    config = _load_config(args)
    config["internal"]["endpoints"] = config_module.merge(
        config, {"internal": {"endpoints": args.connect}}, "--connect"
    )["internal"]["endpoints"]
    keys = None
    if args.server_key or args.client_key:
        from runtime.wire.keys import ClientKeys

        if not (args.server_key and args.client_key):
            raise ConfigError("CURVE needs both --server-key (the runtime's server.key) and --client-key")
        keys = ClientKeys.from_files(args.server_key, args.client_key)
    module_name, _, class_name = ROLE_MODULES[args.role].partition(":")
    role_class = getattr(importlib.import_module(module_name), class_name)
    return role_class(config, joining=True, keys=keys, heartbeat_file=args.heartbeat_file).run()


def build_parser() -> argparse.ArgumentParser:
    from runtime import __version__

    parser = argparse.ArgumentParser(prog="agentrt", description="Agent runtime: a student decides, a teacher teaches.")
    parser.add_argument("--version", action="version", version=f"agentrt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the daemon (foreground unless --detach)")
    _add_common(up)
    up.add_argument("--detach", action="store_true", help="run in the background; print its pid")
    up.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip building every selected component and running one step of each first (agentrt plugins --check)",
    )
    up.add_argument("--log-format", choices=["auto", "json", "console"])
    up.add_argument("--peer-endpoint", help="ZeroMQ endpoint for peers, e.g. tcp://127.0.0.1:7411")
    up.add_argument("--wait", type=float, default=120.0, help="with --detach: seconds to wait for every role to run")
    up.add_argument(
        "--insecure",
        action="store_true",
        help="allow a peer endpoint reachable from other hosts without CURVE (security.insecure)",
    )
    up.set_defaults(handler=cmd_up)

    down = commands.add_parser("down", help="stop the daemon of a run directory gracefully")
    _add_common(down)
    down.add_argument("--wait", type=float, default=30.0, help="seconds to wait for every process to be gone")
    down.set_defaults(handler=cmd_down)

    status = commands.add_parser("status", help="roles, peers and counters of a running daemon")
    _add_common(status)
    status.add_argument("--json", action="store_true")
    status.add_argument("--ready", action="store_true", help="exit 1 unless every role is running (a readiness probe)")
    status.set_defaults(handler=cmd_status)

    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser("show", help="print the effective configuration")
    _add_common(show)
    show.add_argument("--json", action="store_true")
    show.add_argument("--annotate", action="store_true", help="explain each key in a comment")
    show.set_defaults(handler=cmd_config_show)

    attach = commands.add_parser("attach", help="attach peers to a running daemon")
    attach_commands = attach.add_subparsers(dest="attach_command", required=True)
    gym = attach_commands.add_parser("gym", help="run Gymnasium environments as peers")
    _add_common(gym)
    gym.add_argument("env_id")
    gym.add_argument("--episodes", type=_positive_int, default=10, help="episodes in all (default 10)")
    gym.add_argument("--peers", type=_positive_int, default=1, help="peers side by side (default 1)")
    gym.add_argument(
        "--policy",
        choices=["auto", "student", "teacher"],
        default="auto",
        help="who decides: the runtime's query policy (auto), or force student or teacher",
    )
    gym.add_argument("--seed", type=int, default=0)
    gym.add_argument(
        "--endpoint", help="peer endpoint (default: where the run directory's daemon serves, else daemon.peer_endpoint)"
    )
    gym.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the runtime")
    gym.add_argument(
        "--edge",
        action="store_true",
        help="the edge mode: each peer runs the student itself and asks for labels (--policy auto) or none (student)",
    )
    gym.add_argument("--edge-format", choices=["safetensors+json", "onnx"], default="safetensors+json")
    gym.add_argument("--labels-per-s", type=float, help="with --edge: each peer's label budget (default 50)")
    gym.add_argument(
        "--transitions", type=float, help="with --edge: share of other steps sent for the query policy (default 0)"
    )
    gym.add_argument("--step-hz", type=float, help="with --edge: control-loop rate (default: as fast as it goes)")
    gym.add_argument("--server-key", help="CURVE: the runtime's public key file (server.key)")
    gym.add_argument(
        "--client-key", help="CURVE: this peer's key pair (<name>.key_secret, agentrt keys generate --client)"
    )
    gym.add_argument("--json", action="store_true")
    gym.set_defaults(handler=cmd_attach_gym)

    keys = commands.add_parser("keys", help="CURVE keys: the runtime's pair and the peers allowed to attach")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_commands.add_parser(
        "generate", help="create the runtime's key pair (if absent), or with --client a peer's pair"
    )
    _add_common(generate)
    generate.add_argument("--client", metavar="NAME", help="create a peer key pair NAME.key / NAME.key_secret")
    generate.add_argument("--out", default=".", help="with --client: where to write the pair (default: here)")
    generate.set_defaults(handler=cmd_keys_generate)
    listing = keys_commands.add_parser("list", help="the runtime's public key and the authorized peers")
    _add_common(listing)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_keys_list)
    authorize = keys_commands.add_parser(
        "authorize", help="allow a peer's public key (effective at its next connection)"
    )
    _add_common(authorize)
    authorize.add_argument("key_file", help="the peer's NAME.key (a .key_secret is read for its public key only)")
    authorize.add_argument("--name", help="name for it (default: the file's name without .key)")
    authorize.add_argument(
        "--role", action="store_true", help="a remote role's key (agentrt role ... --connect), not a peer's"
    )
    authorize.set_defaults(handler=cmd_keys_authorize)
    revoke = keys_commands.add_parser("revoke", help="remove a peer's key (refused from its next connection)")
    _add_common(revoke)
    revoke.add_argument("name")
    revoke.add_argument("--role", action="store_true", help="a remote role's key, not a peer's")
    revoke.set_defaults(handler=cmd_keys_revoke)

    demo = commands.add_parser(
        "demo", help="online distillation on CartPole-v1, end to end, in a run directory of its own"
    )
    _add_common(demo, run_dir=False)
    demo.add_argument("--json", action="store_true", help="print only the summary, as one JSON object")
    demo.add_argument("--peers", type=int, default=4)
    demo.add_argument(
        "--edge", action="store_true", help="edge peers: each runs the student itself while the runtime teaches it"
    )
    demo.add_argument("--max-train-s", type=float, default=180.0)
    demo.add_argument("--eval-episodes", type=int, default=20)
    demo.add_argument("--plot", default="agentrt-demo.png", help="learning-curve PNG ('' for none)")
    demo.set_defaults(handler=cmd_demo)

    student = commands.add_parser("student", help="student versions")
    student_commands = student.add_subparsers(dest="student_command", required=True)
    listing = student_commands.add_parser("list", help="every published version and which one serves")
    _add_common(listing)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_student_list)
    rollback = student_commands.add_parser("rollback", help="serve an earlier version again (a running daemon's)")
    _add_common(rollback)
    rollback.add_argument("--to", type=int, help="version to serve (default: the promoted one before the serving one)")
    rollback.set_defaults(handler=cmd_student_rollback)
    from runtime.learn.export import FORMATS

    export = student_commands.add_parser("export", help="write a student version for use outside the runtime")
    _add_common(export)
    export.add_argument("--version", type=int, help="version to export (default: the serving one)")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--out", help="file to write (default: student-v<N>.onnx / .pt / .safetensors here)")
    export.set_defaults(handler=cmd_student_export)
    compress = student_commands.add_parser(
        "compress",
        help="prune and/or quantize a version into a new one, judged by the promotion gate (daemon stopped)",
    )
    _add_common(compress)
    compress.add_argument("--int8", action="store_true", help="store the weights as int8, one scale per output unit")
    compress.add_argument(
        "--prune", type=float, default=0.0, help="share of each hidden layer's units to remove (0.5: half)"
    )
    compress.add_argument(
        "--finetune-steps",
        type=int,
        default=3000,
        help="distillation steps on the saved teacher labels before quantizing (default 3000: seconds)",
    )
    compress.add_argument("--version", type=int, help="version to compress (default: the serving one)")
    compress.add_argument("--json", action="store_true")
    compress.set_defaults(handler=cmd_student_compress)

    teacher = commands.add_parser("teacher", help="teacher tools")
    teacher_commands = teacher.add_subparsers(dest="teacher_command", required=True)
    serve = teacher_commands.add_parser(
        "serve",
        help="serve the configured teacher for a daemon on another host: with --connect, as its teacher role "
        "(agentrt role teacher); with --endpoint, for [teacher] plugin = remote",
    )
    _add_common(serve)
    serve.add_argument(
        "--endpoint",
        default="tcp://127.0.0.1:7412",
        help="where to listen for the remote teacher plugin (no CURVE: beyond loopback only with --insecure)",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow an --endpoint reachable from other hosts, without CURVE (security.insecure)",
    )
    _add_joining(serve)
    serve.set_defaults(handler=cmd_teacher_serve, connect=None)

    role = commands.add_parser(
        "role", help="run a role on this host for a daemon on another (internal.remote_roles there)"
    )
    _add_common(role)
    role.add_argument("role", choices=REMOTE_CAPABLE)
    _add_joining(role, required=True)
    role.set_defaults(handler=cmd_role)

    heartbeat = commands.add_parser(
        "heartbeat",
        help="exit 0 if a role's --heartbeat-file was touched within --max-age seconds, else 1 (a liveness probe)",
    )
    heartbeat.add_argument("path", help="the role's --heartbeat-file")
    heartbeat.add_argument("--max-age", type=float, default=30.0, help="seconds since the last heartbeat (default 30)")
    heartbeat.set_defaults(handler=cmd_heartbeat)

    from runtime.learn.offline import add_parser as add_distill_parser

    add_distill_parser(commands)

    plugins = commands.add_parser("plugins", help="loaded plugins and what the configuration selects")
    _add_common(plugins)
    plugins.add_argument("--json", action="store_true")
    plugins.add_argument("--markdown", action="store_true", help="every component's parameters, as in docs/plugins.md")
    plugins.add_argument(
        "--check", action="store_true", help="build every selected component and run one step of each on sample inputs"
    )
    plugins.set_defaults(handler=cmd_plugins)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except AgentrtError as exc:
        # The error tree decides the exit code (runtime/errors.py); every line is prefixed with the command.
        command = _command_name(args)
        kind = "configuration error: " if isinstance(exc, ConfigError) else ""
        for line in f"{kind}{exc}".splitlines():
            print(f"agentrt {command}: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
