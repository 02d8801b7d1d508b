"""CURVE on the peer endpoint: who may attach is decided by the authorized-keys directory, at every
new connection; an endpoint reachable from other hosts needs CURVE or an explicit --insecure."""

from __future__ import annotations

import json

import gymnasium
import pytest
import zmq

from runtime.peer import ClientKeys, Peer
from runtime.testing import agentrt, start_daemon
from runtime.wire import protocol
from runtime.wire.keys import KeyStore, generate_client

ENV = gymnasium.make("CartPole-v1")


def attach(daemon, keys: ClientKeys | None, wait_s: float) -> Peer:
    """A peer that acted once, or TimeoutError when the runtime never welcomed it."""
    peer = Peer(daemon.endpoint, ENV.observation_space, ENV.action_space, timeout_s=30, curve=keys)
    try:
        peer.connect(wait_s=wait_s)
        peer.act(ENV.reset(seed=0)[0])
    except BaseException:
        peer.close()
        raise
    return peer


def refused_keys(daemon) -> int:
    return daemon.status()["roles"]["gateway"]["counters"].get("peers_refused_key", 0)


@pytest.fixture(scope="module")
def curve_daemon(tmp_path_factory):
    keys_dir = tmp_path_factory.mktemp("keys")
    store = KeyStore(keys_dir)
    server_key = store.generate_server()
    clients = tmp_path_factory.mktemp("clients")
    pairs = {name: generate_client(clients, name) for name in ("robot", "stranger")}
    store.authorize(pairs["robot"][0], "robot")
    daemon = start_daemon(f'[security]\ncurve = true\nkeys_dir = "{keys_dir}"\n')
    try:
        yield daemon, store, {name: ClientKeys.from_files(server_key, secret) for name, (_, secret) in pairs.items()}
    finally:
        daemon.stop()


def test_an_authorized_key_attaches_and_the_status_says_curve(curve_daemon):
    daemon, _, keys = curve_daemon
    with attach(daemon, keys["robot"], wait_s=30) as peer:
        assert peer.peer_id
    assert daemon.status()["daemon"]["peer_security"] == "curve"


def test_an_unknown_key_is_refused(curve_daemon):
    daemon, _, keys = curve_daemon
    before = refused_keys(daemon)
    with pytest.raises(TimeoutError):
        attach(daemon, keys["stranger"], wait_s=3)
    daemon.wait_until(lambda s: s["roles"]["gateway"]["counters"].get("peers_refused_key", 0) > before, what="refusal")


def test_a_plaintext_client_gets_nothing_from_a_curve_endpoint(curve_daemon):
    daemon, _, _ = curve_daemon
    failures = daemon.status()["roles"]["gateway"]["counters"].get("handshake_failures", 0)
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(daemon.endpoint)
        sock.send(protocol.encode("hello", peer_name="plain", observation_space={}, action_space={}), zmq.NOBLOCK)
        # The handshake fails at the gateway (a NULL client meets a CURVE server): nothing is read or answered.
        daemon.wait_until(
            lambda s: s["roles"]["gateway"]["counters"].get("handshake_failures", 0) > failures,
            what="handshake failure",
        )
        assert sock.poll(500) == 0
    finally:
        sock.close()
        context.term()


def test_authorizing_and_revoking_take_effect_at_the_next_connection_without_restart(tmp_path, curve_daemon):
    daemon, store, keys = curve_daemon
    gateway_pid = daemon.status()["roles"]["gateway"]["pid"]
    pair = generate_client(tmp_path, "late")
    late = ClientKeys.from_files(store.directory / "server.key", pair[1])
    with pytest.raises(TimeoutError):
        attach(daemon, late, wait_s=3)
    store.authorize(pair[0], "late")
    with attach(daemon, late, wait_s=30):
        pass
    store.revoke("late")
    before = refused_keys(daemon)
    with pytest.raises(TimeoutError):
        attach(daemon, late, wait_s=3)
    daemon.wait_until(lambda s: s["roles"]["gateway"]["counters"].get("peers_refused_key", 0) > before, what="refusal")
    assert daemon.status()["roles"]["gateway"]["pid"] == gateway_pid  # no restart was needed


def test_a_wildcard_endpoint_without_curve_is_refused_unless_insecure(tmp_path):
    run_dir = tmp_path / "run"
    refused = agentrt("up", "--run-dir", str(run_dir), "--peer-endpoint", "tcp://0.0.0.0:*", "--no-check")
    assert refused.returncode == 2, refused.stderr
    assert "reachable from other hosts" in refused.stderr and "--insecure" in refused.stderr
    daemon = start_daemon(endpoint="tcp://0.0.0.0:*", env={"AGENTRT_SECURITY_INSECURE": "true"})
    try:
        assert daemon.status()["daemon"]["peer_security"] == "insecure"
        assert "peer_endpoint_insecure" in daemon.log()
        shown = daemon.cli("status")
        assert shown.returncode == 0 and "without CURVE" in shown.stdout
    finally:
        daemon.stop()


def test_keys_commands_generate_authorize_list_and_revoke(tmp_path):
    env = {"AGENTRT_SECURITY_KEYS_DIR": str(tmp_path / "keys")}
    assert agentrt("keys", "generate", env=env).returncode == 0
    client = agentrt("keys", "generate", "--client", "arm", "--out", str(tmp_path), env=env)
    assert client.returncode == 0, client.stderr
    secret = (tmp_path / "arm.key_secret").read_bytes()
    again = agentrt("keys", "generate", "--client", "arm", "--out", str(tmp_path), env=env)
    assert again.returncode == 2 and "arm.key exists" in again.stderr, again.stderr
    assert (tmp_path / "arm.key_secret").read_bytes() == secret  # the authorized peer keeps working
    absent = agentrt("keys", "authorize", str(tmp_path / "nope.key"), env=env)
    assert absent.returncode == 2 and "nope.key does not exist" in absent.stderr, absent.stderr
    assert agentrt("keys", "authorize", str(tmp_path / "arm.key"), env=env).returncode == 0
    listed = json.loads(agentrt("keys", "list", "--json", env=env).stdout)
    assert listed["server"] and list(listed["authorized"]) == ["arm"]
    assert "secret" not in (tmp_path / "keys" / "authorized" / "arm.key").read_text()
    assert agentrt("keys", "revoke", "arm", env=env).returncode == 0
    assert json.loads(agentrt("keys", "list", "--json", env=env).stdout)["authorized"] == {}
    missing = agentrt("keys", "revoke", "arm", env=env)
    assert missing.returncode == 2 and "no authorized key named 'arm'" in missing.stderr
