"""The JavaScript peers of docs/protocol.md, as a user copies them: they parse wherever Node.js is
installed; with JS_PEER_DEPS naming a folder where ``npm install zeromq@6 @msgpack/msgpack@3``
ran, they also run against a real daemon, the plain peer through a gateway restart."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from runtime.testing import free_port_range, start_daemon

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
NODE = shutil.which("node")
DEPS = os.environ.get("JS_PEER_DEPS")
needs_deps = pytest.mark.skipif(
    NODE is None or not DEPS or not (Path(DEPS) / "node_modules" / "zeromq").is_dir(),
    reason="set JS_PEER_DEPS to a folder where `npm install zeromq@6 @msgpack/msgpack@3` ran (and install Node.js)",
)
pytestmark = pytest.mark.timeout(300)


def example(section: str) -> str:
    """The js code block of the section titled ``section``."""
    match = re.search(rf"^## {section}\n.*?```js\n(.*?)```", DOC.read_text(encoding="utf-8"), re.M | re.S)
    assert match, f"no js block under '## {section}' in {DOC.name}"
    return match.group(1)


@contextmanager
def script(code: str, folder: Path) -> Iterator[Path]:
    """``code`` as an ES module in ``folder``, where Node.js resolves its imports, removed afterwards."""
    path = folder / f"agentrt-test-{uuid.uuid4().hex[:8]}.mjs"
    path.write_text(code, encoding="utf-8")
    try:
        yield path
    finally:
        path.unlink()


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
@pytest.mark.parametrize("section", ["A JavaScript peer", "A JavaScript edge peer"])
def test_the_javascript_examples_parse(section, tmp_path):
    with script(example(section), tmp_path) as path:
        checked = subprocess.run([NODE, "--check", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr


@needs_deps
def test_the_javascript_peer_says_hello_again_after_a_runtime_restart_and_loses_no_step():
    """While the runtime is down the peer's resends queue up in its socket; on reconnection every
    copy comes back NOT_ATTACHED: the peer must take the first as its cue to say hello and the
    others as stale."""
    steps = 3000
    endpoint = f"tcp://127.0.0.1:{free_port_range(1)}"
    daemons = [start_daemon(endpoint=endpoint)]
    assert NODE and DEPS
    try:
        with script(example("A JavaScript peer"), Path(DEPS)) as path:
            peer = subprocess.Popen(
                [NODE, str(path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "PEER_ENDPOINT": endpoint, "STEPS": str(steps)},
            )
            try:
                assert peer.stdout is not None
                lines = []
                for line in peer.stdout:
                    lines.append(line)
                    if line.startswith("seq 50:"):
                        daemons[0].stop(remove_run_dir=False)
                        daemons.append(start_daemon(endpoint=endpoint, run_dir=daemons[0].run_dir))
                peer.wait(timeout=240)
            finally:
                if peer.poll() is None:
                    peer.kill()
                    peer.wait(timeout=10)
        output = "".join(lines)
        assert peer.returncode == 0, output[-2000:]
        seqs = [int(seq) for seq in re.findall(r"^seq (\d+):", output, re.M)]
        assert seqs == list(range(1, steps + 1)), output[-2000:]  # every step answered once, in order
        assert len(daemons) == 2
        daemons[1].wait_until(lambda status: status["peers_connected"] == 0, what="the peer's bye")
    finally:
        for daemon in reversed(daemons):
            daemon.stop()


@needs_deps
def test_the_javascript_edge_peer_acts_with_the_student_it_is_sent():
    daemon = start_daemon()
    assert NODE and DEPS
    try:
        with script(example("A JavaScript edge peer"), Path(DEPS)) as path:
            edge = subprocess.run(
                [NODE, str(path)],
                capture_output=True,
                text=True,
                timeout=240,
                env={**os.environ, "PEER_ENDPOINT": daemon.endpoint, "EPISODES": "20"},
            )
        assert edge.returncode == 0, edge.stdout[-2000:] + edge.stderr[-2000:]
        assert "acting with student v0" in edge.stdout and "episode 20:" in edge.stdout
        status = daemon.wait_until(lambda s: s["roles"]["gateway"]["counters"].get("edge_labels", 0) > 0)
        assert status["roles"]["gateway"]["counters"]["students_sent"] == 1
    finally:
        daemon.stop()
