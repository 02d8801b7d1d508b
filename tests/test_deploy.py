"""deploy/, checked as far as a machine without a Docker daemon or a cluster allows.

Every command a deploy file runs is parsed by agentrt's own argument parser (so a renamed flag or
subcommand fails here, not in a container), every AGENTRT_* variable is loaded by the runtime's
configuration loader, the Kubernetes manifests are validated against the pinned Kubernetes JSON
schemas that kubernetes-validate ships, and the files are checked against each other: images
against Dockerfiles, secrets against mounts and against the key files `agentrt keys` makes,
endpoints against the services that bind them.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
import zmq.auth

from runtime import config
from runtime.cli.commands import build_parser
from runtime.config import Settings, endpoint_security, internal_network, peer_security
from runtime.errors import ExitCode
from runtime.plugin.pluginmanager import load
from runtime.wire.keys import PUBLIC_SUFFIX, SECRET_SUFFIX, SERVER, ClientKeys, KeyStore, RoleKeys, is_loopback
from runtime.wire.spaces import agent_spaces
from runtime.wire.transport import NETWORK_ENDPOINTS

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
#: The oldest Kubernetes these manifests are meant for; its schemas ship with kubernetes-validate.
KUBERNETES_VERSION = "1.30.0"
#: Each image the manifests and compose.yaml run, and the Dockerfile that builds it.
IMAGES = {"agentrt": "Dockerfile", "agentrt-teacher-cuda": "Dockerfile.teacher-cuda"}


# --- reading the files -------------------------------------------------------------------------------
@cache
def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in (DEPLOY / name).read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def instruction(name: str, keyword: str) -> list[str]:
    return [arguments for found, arguments in dockerfile(name) if found == keyword]


def exec_form(arguments: str) -> list[str]:
    assert arguments.startswith("["), f"use the exec form (a JSON array), so signals reach agentrt: {arguments}"
    return json.loads(arguments)


def image_command(name: str) -> list[str]:
    """What a container of this image runs without overrides: ENTRYPOINT + CMD."""
    (entrypoint,) = instruction(name, "ENTRYPOINT")
    (command,) = instruction(name, "CMD")
    return exec_form(entrypoint) + exec_form(command)


def image_env(name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in instruction(name, "ENV"):
        env.update(word.split("=", 1) for word in shlex.split(arguments))
    return env


@cache
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@cache
def manifests() -> list[dict]:
    """Every Kubernetes object in deploy/kubernetes/ (not the kustomization)."""
    objects = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


def objects_of(kind: str) -> list[dict]:
    return [obj for obj in manifests() if obj["kind"] == kind]


def workloads() -> list[dict]:
    return objects_of("StatefulSet") + objects_of("Deployment")


def containers(workload: dict, init: bool = False) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec["containers"] + (spec.get("initContainers", []) if init else [])


def k8s_env(container: dict) -> dict[str, str]:
    return {var["name"]: var["value"] for var in container.get("env", [])}


@cache
def systemd_unit() -> dict[str, list[str]]:
    """key -> values (a key may repeat) of deploy/agentrt.service."""
    unit: dict[str, list[str]] = {}
    for line in (DEPLOY / "agentrt.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            unit.setdefault(key, []).append(value)
    return unit


def readme_deploying_commands() -> list[tuple[dict[str, str], list[str]]]:
    """(environment, command) of each agentrt command line in the README's shell blocks under "Deploying"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Deploying\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["sudo", "-u"]:
                words = words[3:]
            env = {}
            while words and "=" in words[0]:  # VAR=value prefixes
                env.update([words.pop(0).split("=", 1)])
            if words and PurePosixPath(words[0]).name == "agentrt":
                commands.append((env, words))
    return commands


# --- what the files say, checked with agentrt itself -------------------------------------------------
def agentrt_argv(command: list[str]) -> list[str] | None:
    """The arguments after ``agentrt`` (behind tini or a full path), or None for another program."""
    if command[:2] == ["tini", "--"]:
        command = command[2:]
    if command and PurePosixPath(command[0]).name == "agentrt":
        return command[1:]
    return None


def strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """No abbreviated flags: `--episode` for `--episodes` works until another flag shares the prefix."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                strict(subparser)
    return parser


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """agentrt's own parser on ``argv``: unknown subcommands, flags, choices and types all fail."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            return strict(build_parser()).parse_args(argv)
    except SystemExit:
        pytest.fail(f"agentrt {' '.join(argv)} does not parse:\n{errors.getvalue()}")


def load_config(env: dict[str, str], path: Path | None = None) -> dict:
    """The configuration an agentrt process with this environment gets; a teacher it selects is built."""
    agentrt_env = {name: value for name, value in env.items() if name.startswith("AGENTRT_")}
    loaded = config.load(path, environ=agentrt_env)
    settings = Settings.of(loaded)
    observation_space, action_space = agent_spaces(settings.agent.table())
    load(settings.plugins.table()).build(
        "teacher", settings.teacher.plugin, settings.teacher.params, observation_space, action_space
    )
    return loaded


def endpoint_flag(argv: list[str], flag: str) -> tuple[str, int]:
    parsed = urlsplit(argv[argv.index(flag) + 1])
    assert parsed.scheme == "tcp" and parsed.hostname and parsed.port, argv
    return parsed.hostname, parsed.port


def bind_of(argv: list[str]) -> tuple[str, int] | None:
    """Where this agentrt command listens for peers (or the `remote` teacher plugin) over TCP, if it does."""
    for flag in ("--peer-endpoint", "--endpoint"):
        if argv[:1] in (["up"], ["teacher"]) and flag in argv:
            return endpoint_flag(argv, flag)
    return None


def settings_of(env: dict[str, str], argv: list[str]) -> Settings:
    """The settings this agentrt command runs with: its AGENTRT_* variables and its flags."""
    parsed = parse_cli(argv)
    overrides: dict[str, dict] = {}
    if getattr(parsed, "insecure", False):
        overrides["security"] = {"insecure": True}
    if getattr(parsed, "peer_endpoint", None):
        overrides["daemon"] = {"peer_endpoint": parsed.peer_endpoint}
    agentrt_env = {name: value for name, value in env.items() if name.startswith("AGENTRT_")}
    return Settings.of(config.load(environ=agentrt_env, overrides=overrides))


def internal_ports(settings: Settings) -> dict[int, str]:
    """Port -> internal endpoint name of the daemon's TCP internal endpoints (none for ipc)."""
    if settings.internal.endpoints == "ipc":
        return {}
    base = int(settings.internal.endpoints.rpartition(":")[2])
    return {base + index: name for index, name in enumerate(NETWORK_ENDPOINTS)}


def listens(env: dict[str, str], argv: list[str]) -> set[tuple[str, int]]:
    """Every (host, port) this agentrt command binds over TCP: the daemon's internal endpoints too."""
    bind = bind_of(argv)
    bound = set() if bind is None else {bind}
    if argv[:1] == ["up"]:
        settings = settings_of(env, argv)
        host = settings.internal.endpoints.removeprefix("tcp://").rpartition(":")[0]
        bound |= {(host, port) for port in internal_ports(settings)}
    return bound


def listens_without_curve(env: dict[str, str], argv: list[str]) -> bool:
    """Whether this command listens beyond loopback without CURVE, by the runtime's own start-up rules
    (endpoint_security, internal_network), which raise ConfigError where it would refuse to start."""
    if argv[:1] not in (["up"], ["teacher"]):
        return False
    settings = settings_of(env, argv)
    if argv[0] == "teacher":  # `teacher serve`: --connect binds nothing, --endpoint has no CURVE
        parsed = parse_cli(argv)
        if parsed.connect:
            return False
        return (
            endpoint_security(parsed.endpoint, False, settings.security.insecure, "the teacher endpoint", "")
            == "insecure"
        )
    if peer_security(settings) != "curve":
        return True
    if settings.internal.curve:
        return False
    internal_network(settings)
    return settings.internal.endpoints != "ipc" and not is_loopback(settings.internal.endpoints)


def every_command() -> list[tuple[str, list[str]]]:
    """(where, command) for every command line a deploy file or the README's Deploying section runs."""
    commands = []
    for name in IMAGES.values():
        commands.append((f"{name} ENTRYPOINT+CMD", image_command(name)))
        for arguments in instruction(name, "HEALTHCHECK"):
            commands.append((f"{name} HEALTHCHECK", exec_form(arguments.split(" CMD ", 1)[1])))
    for service_name, service in compose()["services"].items():
        commands.append((f"compose {service_name}", compose_command(service)))
        if "healthcheck" in service:
            commands.append((f"compose {service_name} healthcheck", service["healthcheck"]["test"][1:]))
    for workload in workloads():
        for container in containers(workload, init=True):
            where = f"{workload['kind']} {workload['metadata']['name']}/{container['name']}"
            commands.append((where, container_command(container)))
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if "exec" in container.get(probe, {}):
                    commands.append((f"{where} {probe}", container[probe]["exec"]["command"]))
    for key in ("ExecStart", "ExecStop"):
        commands += [(f"agentrt.service {key}", shlex.split(value)) for value in systemd_unit()[key]]
    commands += [("README Deploying", command) for _, command in readme_deploying_commands()]
    return commands


def compose_command(service: dict) -> list[str]:
    image = IMAGES[service["image"].split(":")[0]]
    entrypoint = exec_form(instruction(image, "ENTRYPOINT")[0])
    return entrypoint + service["command"] if "command" in service else image_command(image)


def container_command(container: dict) -> list[str]:
    if "command" in container:
        return container["command"] + container.get("args", [])
    image = IMAGES[container["image"]]
    return exec_form(instruction(image, "ENTRYPOINT")[0]) + container["args"]


def agentrt_commands() -> list[tuple[str, list[str]]]:
    return [(where, argv) for where, command in every_command() if (argv := agentrt_argv(command)) is not None]


@pytest.mark.parametrize("where, argv", agentrt_commands(), ids=lambda value: str(value)[:60])
def test_every_agentrt_command_parses(where, argv):
    parsed = parse_cli(argv)
    assert callable(parsed.handler), where


def test_every_command_a_deploy_file_runs_is_agentrt():
    """Anything else would escape the parser check above."""
    assert [where for where, command in every_command() if agentrt_argv(command) is None] == []


def test_the_images_call_the_installed_agentrt_entry_point():
    executable = Path(sys.executable).parent / "agentrt"
    result = subprocess.run([executable, "status", "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "--run-dir" in result.stdout, result.stderr


# --- Dockerfiles --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", IMAGES.values())
def test_dockerfile_runs_agentrt_as_a_fixed_non_root_user(name):
    users = instruction(name, "USER")
    assert users and users[-1] not in ("root", "0"), name
    keywords = [keyword for keyword, _ in dockerfile(name)]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    (useradd,) = [arguments for arguments in instruction(name, "RUN") if "useradd" in arguments]
    assert users[-1] in useradd.split() and "--uid 10001" in useradd  # the uid the manifests run as


@pytest.mark.parametrize("name", IMAGES.values())
def test_dockerfile_installs_the_torch_the_makefile_pins_before_the_project(name):
    pin = re.search(r"^TORCH_PIN := (\S+)$", (ROOT / "Makefile").read_text(), re.M)[1]
    runs = instruction(name, "RUN")
    torch_step = next(index for index, run in enumerate(runs) if pin in run.split())
    project_step = next(index for index, run in enumerate(runs) if re.search(r"pip install \.(\s|$)", run))
    assert torch_step < project_step


@pytest.mark.parametrize("name", IMAGES.values())
def test_dockerfile_copies_every_package_and_its_ignore_file_lets_them_through(name):
    copied = {source for arguments in instruction(name, "COPY") for source in arguments.split()[:-1]}
    for source in copied:
        assert (ROOT / source).exists(), source
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pattern in packages["include"]:
        assert any(fnmatch.fnmatch(source, pattern) for source in copied), f"{pattern} is never copied"
    assert {"pyproject.toml", "README.md"} <= copied  # pip reads both to install the project
    ignore = [line for line in (DEPLOY / f"{name}.dockerignore").read_text().splitlines() if line[:1] not in ("", "#")]
    assert ignore[0] == "*", "the context is the repository root: everything (.venv, .git) is excluded first"
    assert copied <= {line[1:] for line in ignore if line.startswith("!")}


def test_runtime_image_serves_peers_on_an_exposed_port_with_its_run_directory_on_the_volume():
    argv = agentrt_argv(image_command("Dockerfile"))
    assert argv[0] == "up" and "--detach" not in argv  # the container lives as long as the daemon
    host, port = bind_of(argv)
    assert host == "0.0.0.0" and instruction("Dockerfile", "EXPOSE") == [str(port)]
    (volume,) = instruction("Dockerfile", "VOLUME")
    assert PurePosixPath(volume) in PurePosixPath(image_env("Dockerfile")["AGENTRT_RUN_DIR"]).parents
    (healthcheck,) = instruction("Dockerfile", "HEALTHCHECK")
    assert agentrt_argv(exec_form(healthcheck.split(" CMD ", 1)[1]))[0] == "status"


def test_teacher_image_runs_the_remote_teacher_role_which_binds_nothing_and_asks_for_the_gpu():
    argv = agentrt_argv(image_command("Dockerfile.teacher-cuda"))
    assert argv[:3] == ["role", "teacher", "--connect"] and "--server-key" in argv and "--client-key" in argv
    assert not listens(image_env("Dockerfile.teacher-cuda"), argv)
    assert instruction("Dockerfile.teacher-cuda", "EXPOSE") == []
    assert argv == compose_argv(compose()["services"]["teacher"])  # its default is compose's
    assert image_env("Dockerfile.teacher-cuda")["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert not any("download.pytorch.org/whl/cpu" in run for run in instruction("Dockerfile.teacher-cuda", "RUN"))


@pytest.mark.parametrize("name", IMAGES.values())
def test_image_environment_is_valid_configuration(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./agentrt.toml from wherever the suite runs
    env = image_env(name)
    assert load_config(env)["daemon"]["run_dir"] == env["AGENTRT_RUN_DIR"]


# --- compose ------------------------------------------------------------------------------------------
def compose_env(service: dict) -> dict[str, str]:
    return {**image_env(IMAGES[service["image"].split(":")[0]]), **service.get("environment", {})}


def compose_services_sharing_a_network(first: str, second: str) -> bool:
    services = compose()["services"]
    return bool(set(services[first].get("networks", [])) & set(services[second].get("networks", [])))


def compose_argv(service: dict) -> list[str]:
    argv = agentrt_argv(compose_command(service))
    assert argv is not None
    return argv


def test_compose_builds_each_image_from_its_dockerfile_once():
    built = {}
    for name, service in compose()["services"].items():
        image = service["image"].split(":")[0]
        assert image in IMAGES, f"{name} runs {image}, which no deploy/Dockerfile builds"
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert context == ROOT, "the Dockerfiles COPY from the repository root"
            assert context / service["build"]["dockerfile"] == DEPLOY / IMAGES[image]
            assert image not in built, f"{image} built by both {built.get(image)} and {name}"
            built[image] = name
    assert set(built) == set(IMAGES)


def test_compose_secrets_are_declared_used_and_kept_out_of_git():
    services, secrets = compose()["services"], compose()["secrets"]
    used = {secret for service in services.values() for secret in service.get("secrets", [])}
    assert used == set(secrets)
    files = [(DEPLOY / secret["file"]).resolve() for secret in secrets.values()]
    for path in files:
        assert DEPLOY / "keys" in path.parents, path
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot ask git whether the key files are ignored")
    result = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--no-index", *map(str, files)], capture_output=True, text=True
    )
    assert sorted(result.stdout.split()) == sorted(map(str, files)), "a key file could be committed"


def test_compose_keys_come_from_secrets_and_peers_and_the_teacher_get_only_public_server_keys():
    services, secrets = compose()["services"], compose()["secrets"]
    clients = 0
    for name, service in services.items():
        env = service.get("environment", {})
        if "AGENTRT_SECURITY_KEYS_DIR" in env:
            secret = PurePosixPath(env["AGENTRT_SECURITY_KEYS_DIR"])
            assert secret.parent == PurePosixPath("/run/secrets") and secret.name in service["secrets"], name
        argv = compose_argv(service)
        if "--server-key" in argv or "--client-key" in argv:
            server_key = PurePosixPath(argv[argv.index("--server-key") + 1])
            client_key = PurePosixPath(argv[argv.index("--client-key") + 1])
            for key in (server_key, client_key):
                assert key.parent == PurePosixPath("/run/secrets") and key.name in service["secrets"], name
            assert not secrets[server_key.name]["file"].endswith(SECRET_SUFFIX), f"{name} needs the public key only"
            assert secrets[client_key.name]["file"].endswith(SECRET_SUFFIX), f"{name} presents its own key pair"
            clients += 1
    assert clients == 2  # the gym peer and the teacher


def test_compose_endpoints_name_a_service_on_a_shared_network_at_the_port_it_binds():
    services = compose()["services"]
    binds = {name: listens(compose_env(service), compose_argv(service)) for name, service in services.items()}
    references = 0
    for name, service in services.items():
        text = json.dumps([compose_command(service), service.get("environment", {})])
        for host, port in re.findall(r"tcp://([\w.-]+):(\d+)", text):
            if host in services:
                assert compose_services_sharing_a_network(name, host), f"{name} cannot reach {host}"
                assert ("0.0.0.0", int(port)) in binds[host], f"{name} expects {host} on port {port}"
                references += 1
    assert references >= 2  # the peer and the teacher find the runtime


def test_compose_nothing_listens_without_curve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    services = compose()["services"]
    plaintext = [
        name for name, service in services.items() if listens_without_curve(compose_env(service), compose_argv(service))
    ]
    assert plaintext == []
    assert listens(compose_env(services["runtime"]), compose_argv(services["runtime"]))  # it does listen


def test_compose_teacher_is_the_runtimes_remote_teacher_role_over_curve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    services = compose()["services"]
    argv = compose_argv(services["teacher"])
    assert argv[:3] == ["role", "teacher", "--connect"]
    runtime = settings_of(compose_env(services["runtime"]), compose_argv(services["runtime"]))
    assert runtime.internal.curve and runtime.internal.remote_roles == ["teacher"]
    host, port = endpoint_flag(argv, "--connect")
    assert host == "runtime" and internal_ports(runtime)[port] == NETWORK_ENDPOINTS[0]  # the base port
    assert runtime.internal.endpoints == f"tcp://0.0.0.0:{port}"
    teacher = settings_of(compose_env(services["teacher"]), argv)
    assert teacher.agent.table() == runtime.agent.table(), "a remote role must see the daemon's agent"


def test_readme_keys_commands_make_every_file_compose_mounts_and_they_work(tmp_path, monkeypatch):
    """The README's `agentrt keys` commands, run in-process with ``tmp_path`` as the repository root
    (and as the home of the default keys directory, for the commands that use it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    keys_commands = [(env, argv[1:]) for env, argv in readme_deploying_commands() if argv[1:2] == ["keys"]]
    assert keys_commands
    for env, argv in keys_commands:
        with monkeypatch.context() as scoped:
            for name, value in env.items():
                scoped.setenv(name, value)
            parsed = parse_cli(argv)
            assert parsed.handler(parsed) == ExitCode.OK, argv
    files = {name: tmp_path / "deploy" / secret["file"] for name, secret in compose()["secrets"].items()}
    for name, path in files.items():
        assert path.exists(), f"secret {name}: the README's commands do not make {path.relative_to(tmp_path)}"
    runtime_env = compose()["services"]["runtime"]["environment"]
    store = KeyStore(files[PurePosixPath(runtime_env["AGENTRT_SECURITY_KEYS_DIR"]).name])
    assert store.server_secret()
    peer = compose()["services"]["gym-peer"]
    argv = compose_argv(peer)
    mounted = {f"/run/secrets/{name}": path for name, path in files.items()}
    client = ClientKeys.from_files(
        mounted[argv[argv.index("--server-key") + 1]], mounted[argv[argv.index("--client-key") + 1]]
    )
    assert store.callback("global", client.public), "the gym peer's key is not authorized by the runtime's keys"
    argv = compose_argv(compose()["services"]["teacher"])
    teacher = ClientKeys.from_files(
        mounted[argv[argv.index("--server-key") + 1]], mounted[argv[argv.index("--client-key") + 1]]
    )
    assert teacher.server_public == client.server_public == store.server_public()
    assert RoleKeys(store).callback("agentrt-roles", teacher.public), "the teacher's key is not an authorized role"
    assert not store.callback("global", teacher.public), "a role key must not open the peer endpoint"


def test_compose_waits_for_what_each_service_needs_at_start():
    services = compose()["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            # `up` labels one observation through the teacher before it starts; a peer needs a serving runtime.
            assert condition["condition"] == "service_healthy", f"{name} -> {dependency}"
            assert "healthcheck" in services[dependency] or "HEALTHCHECK" in dict(
                dockerfile(IMAGES[services[dependency]["image"].split(":")[0]])
            ), f"{dependency} has no health check to wait for"


@pytest.mark.parametrize("service", ["runtime", "teacher", "gym-peer"])
def test_compose_service_environment_is_valid_configuration(service, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load_config(compose_env(compose()["services"][service]))


# --- Kubernetes ---------------------------------------------------------------------------------------
def test_kubernetes_manifests_match_the_pinned_schemas_strictly():
    assert manifests()
    for obj in manifests():
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_kubernetes_schema_check_catches_a_misspelled_field():
    """The check above is only worth something if it refuses what a cluster would."""
    (workload,) = objects_of("StatefulSet")
    broken = json.loads(json.dumps(workload))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_deploys_every_manifest_and_names_every_image():
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    on_disk = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    used = {container["image"] for workload in workloads() for container in containers(workload, init=True)}
    assert {image["name"] for image in kustomization["images"]} == used == set(IMAGES)


def test_kubernetes_services_select_a_workload_and_target_a_named_container_port():
    for service in objects_of("Service"):
        selector = service["spec"]["selector"]
        (workload,) = [
            w for w in workloads() if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        ports = {port["name"]: port["containerPort"] for c in containers(workload) for port in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"], service["metadata"]["name"]


def test_kubernetes_runtime_keeps_its_run_directory_on_a_claimed_volume():
    (runtime,) = objects_of("StatefulSet")
    (container,) = containers(runtime)
    claims = {claim["metadata"]["name"] for claim in runtime["spec"]["volumeClaimTemplates"]}
    run_dir = PurePosixPath(k8s_env(container)["AGENTRT_RUN_DIR"])
    mounts = [mount for mount in container["volumeMounts"] if PurePosixPath(mount["mountPath"]) in run_dir.parents]
    assert [mount["name"] for mount in mounts] == list(claims)
    assert runtime["spec"]["serviceName"] in {service["metadata"]["name"] for service in objects_of("Service")}
    host, port = bind_of(agentrt_argv(container_command(container)))
    assert host == "0.0.0.0" and port in {p["containerPort"] for p in container["ports"]}


def test_kubernetes_pods_run_as_the_image_user():
    for workload in workloads():
        security = workload["spec"]["template"]["spec"]["securityContext"]
        assert security["runAsNonRoot"] and security["runAsUser"] == 10001, workload["metadata"]["name"]


def test_kubernetes_keys_secret_mounts_as_a_keys_directory_the_runtime_reads(tmp_path):
    (runtime,) = objects_of("StatefulSet")
    (container,) = containers(runtime)
    keys_dir = k8s_env(container)["AGENTRT_SECURITY_KEYS_DIR"]
    (mount,) = [mount for mount in container["volumeMounts"] if mount["mountPath"] == keys_dir]
    assert mount["readOnly"]
    (volume,) = [v for v in runtime["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    secrets = {secret["metadata"]["name"]: secret for secret in objects_of("Secret")}
    secret = secrets[volume["secret"]["secretName"]]
    items = {item["key"]: item["path"] for item in volume["secret"]["items"]}
    assert set(items) == set(secret.get("stringData", secret.get("data")))  # no key left out of the mount
    # Fill the Secret with real keys as its comment says, and lay it out as the kubelet would.
    server_public, server_secret = zmq.auth.create_certificates(tmp_path, SERVER)
    content = {SERVER + PUBLIC_SUFFIX: server_public, SERVER + SECRET_SUFFIX: server_secret}
    clients = {key: PurePosixPath(path).parent.name for key, path in items.items() if key not in content}
    assert set(clients.values()) == {"authorized", "roles"}  # peers, and the remote teacher
    for key in clients:
        content[key] = zmq.auth.create_certificates(tmp_path, key.removesuffix(PUBLIC_SUFFIX))[0]
    mounted = tmp_path / "mounted"
    for key, path in items.items():
        (mounted / path).parent.mkdir(parents=True, exist_ok=True)
        (mounted / path).write_bytes(Path(content[key]).read_bytes())
    store = KeyStore(mounted)
    assert store.server_secret() == zmq.auth.load_certificate(server_secret)[1]
    for folder, role in (("authorized", False), ("roles", True)):
        expected = sorted(key.removesuffix(PUBLIC_SUFFIX) for key, where in clients.items() if where == folder)
        assert sorted(store.authorized(role=role)) == expected


def mounted_secret(workload: dict, container: dict, path: str) -> tuple[dict, str]:
    """(Secret, its key) that the file ``path`` of ``container`` comes from: it must come from one."""
    for mount in container.get("volumeMounts", []):
        if PurePosixPath(mount["mountPath"]) not in PurePosixPath(path).parents:
            continue
        relative = PurePosixPath(path).relative_to(mount["mountPath"])
        (volume,) = [v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
        assert mount["readOnly"] and "secret" in volume, f"{path} is not mounted read-only from a Secret"
        items = {item["path"]: item["key"] for item in volume["secret"].get("items", [])}
        (secret,) = [s for s in objects_of("Secret") if s["metadata"]["name"] == volume["secret"]["secretName"]]
        key = items.get(str(relative), str(relative))
        assert key in secret.get("stringData", secret.get("data")), f"{path}: no key {key} in its Secret"
        return secret, key
    pytest.fail(f"{path} is not mounted")


def test_kubernetes_teacher_gets_a_gpu_and_joins_the_runtime_as_its_remote_teacher_role(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (teacher,) = objects_of("Deployment")
    (container,) = containers(teacher)
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert container["image"] == "agentrt-teacher-cuda"
    argv = agentrt_argv(container_command(container))
    assert argv[:3] == ["role", "teacher", "--connect"] and "ports" not in container
    (runtime,) = objects_of("StatefulSet")
    (runtime_container,) = containers(runtime)
    runtime_env = {**image_env(IMAGES[runtime_container["image"]]), **k8s_env(runtime_container)}
    settings = settings_of(runtime_env, agentrt_argv(container_command(runtime_container)))
    assert settings.internal.curve and settings.internal.remote_roles == ["teacher"]
    host, port = endpoint_flag(argv, "--connect")
    assert settings.internal.endpoints == f"tcp://0.0.0.0:{port}"
    # The Service it dials carries every internal port, by name, to the runtime's container.
    (service,) = [s for s in objects_of("Service") if s["metadata"]["name"] == host]
    assert service["spec"]["selector"].items() <= runtime["spec"]["template"]["metadata"]["labels"].items()
    assert {p["port"]: p["name"] for p in service["spec"]["ports"]} == internal_ports(settings)
    declared = {p["containerPort"]: p["name"] for p in runtime_container["ports"]}
    assert internal_ports(settings).items() <= declared.items()
    # Its keys come from a Secret: the runtime's public key and its own pair, not the server's secret.
    server_secret, server_key = mounted_secret(teacher, container, argv[argv.index("--server-key") + 1])
    client_secret, client_key = mounted_secret(teacher, container, argv[argv.index("--client-key") + 1])
    assert server_key == SERVER + PUBLIC_SUFFIX and client_key.endswith(SECRET_SUFFIX)
    assert SERVER + SECRET_SUFFIX not in server_secret.get("stringData", server_secret.get("data"))
    # ... and the runtime's keys directory authorizes that key as a role.
    keys_dir = k8s_env(runtime_container)["AGENTRT_SECURITY_KEYS_DIR"]
    role_key = f"{keys_dir}/roles/{client_key.removesuffix(SECRET_SUFFIX)}{PUBLIC_SUFFIX}"
    assert (
        mounted_secret(runtime, runtime_container, role_key)[0]["metadata"]["name"] != client_secret["metadata"]["name"]
    )


def test_the_teachers_health_checks_read_the_heartbeat_file_its_command_touches():
    """The runtime can only report a hung remote teacher as lost; its own host restarts it when the
    heartbeat file its loop touches goes stale."""
    (teacher,) = objects_of("Deployment")
    (container,) = containers(teacher)
    (healthcheck,) = instruction("Dockerfile.teacher-cuda", "HEALTHCHECK")
    checks = {
        "kubernetes": (
            container_command(container),
            [container[p]["exec"]["command"] for p in ("startupProbe", "livenessProbe")],
        ),
        "image": (image_command("Dockerfile.teacher-cuda"), [exec_form(healthcheck.split(" CMD ", 1)[1])]),
    }
    for where, (command, probes) in checks.items():
        argv = agentrt_argv(command)
        path = argv[argv.index("--heartbeat-file") + 1]
        for probe in probes:
            assert agentrt_argv(probe)[:2] == ["heartbeat", path], (where, probe)
            max_age = float(agentrt_argv(probe)[agentrt_argv(probe).index("--max-age") + 1])
            # Many heartbeats fit in the window: one late heartbeat does not fail the check.
            assert max_age >= 10 * Settings.of(config.defaults()).daemon.stats_interval_s, (where, probe)
    assert "healthcheck" not in compose()["services"]["teacher"]  # compose keeps the image's


def test_kubernetes_nothing_listens_without_curve_and_the_teacher_admits_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for workload in workloads():
        (container,) = containers(workload)
        env = {**image_env(IMAGES[container["image"]]), **k8s_env(container)}
        assert not listens_without_curve(env, agentrt_argv(container_command(container))), workload["metadata"]
    (teacher,) = objects_of("Deployment")
    labels = teacher["spec"]["template"]["metadata"]["labels"]
    (policy,) = [
        p for p in objects_of("NetworkPolicy") if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    ]
    assert policy["spec"]["policyTypes"] == ["Ingress"] and not policy["spec"].get("ingress")


@pytest.mark.parametrize("workload", ["StatefulSet", "Deployment"])
def test_kubernetes_container_environment_is_valid_configuration(workload, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for container in containers(objects_of(workload)[0]):
        load_config({**image_env(IMAGES[container["image"]]), **k8s_env(container)})


# --- systemd ------------------------------------------------------------------------------------------
def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    # verify checks that ExecStart= binaries exist: point them at this checkout's agentrt.
    installed = "/opt/agentrt/.venv/bin/agentrt"
    unit = (DEPLOY / "agentrt.service").read_text()
    assert installed in unit
    (tmp_path / "agentrt.service").write_text(unit.replace(installed, str(Path(sys.executable).parent / "agentrt")))
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "agentrt.service")], capture_output=True, text=True, timeout=60
    )
    # Unknown keys are only warned about (exit 0): any line naming the unit is a finding.
    findings = [line for line in (result.stdout + result.stderr).splitlines() if "agentrt.service" in line]
    assert result.returncode == 0 and not findings, result.stdout + result.stderr


def test_systemd_unit_does_not_restart_a_configuration_that_cannot_work(tmp_path, monkeypatch):
    unit = systemd_unit()
    assert unit["Restart"] == ["on-failure"]
    prevented = " ".join(unit["RestartPreventExitStatus"]).split()
    assert str(int(ExitCode.CONFIG)) in prevented and str(int(ExitCode.USAGE)) in prevented
    env = dict(value.split("=", 1) for value in unit["Environment"])
    monkeypatch.chdir(tmp_path)
    # The unit's --config is deploy/agentrt.toml once installed.
    assert load_config(env, DEPLOY / "agentrt.toml")["daemon"]["run_dir"] == "/run/agentrt"
    assert unit["RuntimeDirectory"] == ["agentrt"] and env["AGENTRT_RUN_DIR"] == "/run/agentrt"


# --- deploy/ as a whole ------------------------------------------------------------------------------
def test_every_file_in_deploy_is_checked_here():
    checked = {
        "Dockerfile",
        "Dockerfile.dockerignore",
        "Dockerfile.teacher-cuda",
        "Dockerfile.teacher-cuda.dockerignore",
        "compose.yaml",
        "agentrt.service",
        "agentrt.toml",  # loaded here and compared with the defaults in tests/test_config.py
        ".gitignore",  # test_compose_secrets_are_declared_used_and_kept_out_of_git
        "kubernetes/kustomization.yaml",
        "kubernetes/runtime.yaml",
        "kubernetes/teacher.yaml",
        "kubernetes/secrets.yaml",
    }
    on_disk = {
        str(path.relative_to(DEPLOY)) for path in DEPLOY.rglob("*") if path.is_file() and "keys" not in path.parts
    }
    assert on_disk == checked
