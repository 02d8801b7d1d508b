#!/usr/bin/env python3
"""The device check (issue 13, items 4 and 5): the teacher and the distiller on the CPU and on a GPU.

What is measured
----------------
The model is the built-in pixel teacher of ``examples/mountaincar_cnn.toml`` (a CNN over two
24 x 40 frames, ``builtin:mountaincar_cnn``), with that example's student (a CNN about 25 times
smaller) and the example's configuration, for each placement: the CPU in float32, and where CUDA
is present, the GPU in float32 and in bfloat16.

* **teacher**: a private daemon (``agentrt up``, real role processes) per placement
  (``teacher.device``, ``teacher.dtype``; the answer cache off, so every observation is labelled).
  One DEALER socket, this process, talks to the teacher role's own socket (the one decision and the
  distiller use): requests of 1, 8 and 64 observations, one in flight, for ``--seconds`` each after
  a warm-up. Reported: microseconds per observation (wall time of the round trip / observations),
  so the socket and msgpack costs are in it, as they are for the runtime.
* **batching**: 16 sockets each send one observation at once, ``--bursts`` times; the teacher's
  ``requests`` / ``batches`` counters (status) say how many requests each call of the model served.
  More than 1 means requests that arrive together are labelled together (``teacher.batch_max``),
  which is what makes a GPU teacher pay off.
* **distiller**: the distiller's training code (``runtime.learn.trainer.Trainer``, as the
  distillation role runs it) on 2048 labelled frames, ``distillation.device`` and ``dtype`` per
  placement: train steps/s over ``--seconds`` after a warm-up (on CUDA, synchronised at the end).

On a machine without CUDA only the CPU half runs, and the table and the JSON say why the GPU half
was skipped. Every daemon started here is stopped by pid in a ``finally``. ``--quick``: 1 s windows.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import benchlib

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mountaincar_cnn.toml"
BATCHES = (1, 8, 64)
BURST_SOCKETS = 16
TRAIN_SAMPLES = 2048


def placements() -> tuple[list[tuple[str, str]], str | None, str | None]:
    """(device, dtype) pairs to measure, the GPU's name, and why the GPU half is skipped (or None)."""
    import torch

    cpu = [("cpu", "float32")]
    if not torch.cuda.is_available():
        return cpu, None, f"torch.cuda.is_available() is false (torch {torch.__version__}): no GPU on this machine"
    return [*cpu, ("cuda", "float32"), ("cuda", "bfloat16")], torch.cuda.get_device_name(0), None


def name(device: str, dtype: str) -> str:
    return f"{device} {dtype}"


# --------------------------------------------------------------------------------------------------
# The teacher role, over its socket
# --------------------------------------------------------------------------------------------------
class TeacherClient:
    """DEALER sockets on a daemon's teacher endpoint, speaking ``teach``/``taught``."""

    def __init__(self, run_dir: Path, sockets: int) -> None:
        import zmq

        from runtime.wire import protocol, transport
        from runtime.wire.transport import Transport

        self.protocol = protocol
        self.transport = Transport(run_dir, protocol.DEFAULT_MAX_MESSAGE_BYTES, linger_ms=0)
        self.sockets = [
            self.transport.connect(zmq.DEALER, self.transport.internal(transport.TEACHER)) for _ in range(sockets)
        ]
        self.request_id = 0

    def send(self, index: int, observations: Any) -> int:
        self.request_id += 1
        self.sockets[index].send(self.protocol.encode("teach", request_id=self.request_id, obs=observations))
        return self.request_id

    def receive(self, index: int, timeout_ms: int = 30_000) -> Any:
        if not self.sockets[index].poll(timeout_ms):
            raise TimeoutError(f"the teacher did not answer within {timeout_ms} ms")
        reply = self.protocol.decode(
            self.sockets[index].recv(), self.transport.socket_limit(), accept=frozenset({"taught"})
        )
        return reply["outputs"]

    def close(self) -> None:
        self.transport.close()


def observations(count: int, seed: int) -> Any:
    import gymnasium
    import numpy as np

    from runtime import config

    env_id = config.load(EXAMPLE, environ={})["agent"]["env"]
    space = gymnasium.make(env_id).observation_space
    space.seed(seed)
    return np.stack([space.sample() for _ in range(count)]).astype(np.float32)


def measure_teacher(device: str, dtype: str, seconds: float, bursts: int) -> dict[str, Any]:
    env = {
        "AGENTRT_TEACHER_DEVICE": device,
        "AGENTRT_TEACHER_DTYPE": dtype,
        "AGENTRT_TEACHER_CACHE_SIZE": "0",
        "AGENTRT_TEACHER_TIMEOUT_MS": "10000",
    }
    pool = observations(max(BATCHES) * 4, seed=1)
    result: dict[str, Any] = {"us_per_obs": {}}
    with benchlib.private_daemon(env, config_path=EXAMPLE) as daemon:
        client = TeacherClient(daemon.run_dir, BURST_SOCKETS)
        sent = 0
        try:
            for batch in BATCHES:
                for _ in range(5):  # warm-up: the first CUDA calls pick kernels
                    client.send(0, pool[:batch])
                    client.receive(0)
                sent += 5
                requests, offset = 0, 0
                started = time.perf_counter()
                while time.perf_counter() - started < seconds:
                    client.send(0, pool[offset : offset + batch])
                    client.receive(0)
                    requests += 1
                    offset = (offset + batch) % (len(pool) - batch)
                elapsed = time.perf_counter() - started
                sent += requests
                result["us_per_obs"][str(batch)] = round(elapsed * 1e6 / (requests * batch), 2)
                benchlib.progress(f"teacher {name(device, dtype)} batch {batch}: {requests} requests")
            # Counters arrive with the role's next report: start from all of the above counted.
            before = daemon.wait_until(
                lambda s: benchlib.counter(s, "teacher", "requests") >= sent, what="the teacher's counters"
            )["roles"]["teacher"]["counters"]
            for burst in range(bursts):
                for index in range(BURST_SOCKETS):
                    client.send(index, pool[index + burst % 8 : index + burst % 8 + 1])
                for index in range(BURST_SOCKETS):
                    client.receive(index)
            after = daemon.wait_until(
                lambda s: benchlib.counter(s, "teacher", "requests") >= sent + bursts * BURST_SOCKETS,
                what="the teacher's counters",
            )["roles"]["teacher"]["counters"]
        finally:
            client.close()
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    result["burst"] = {"requests": requests, "batches": batches, "requests_per_batch": round(requests / batches, 2)}
    return result


# --------------------------------------------------------------------------------------------------
# The distiller's training steps
# --------------------------------------------------------------------------------------------------
def measure_distiller(device: str, dtype: str, seconds: float) -> float:
    import numpy as np
    import torch

    from runtime import config
    from runtime.config import Settings
    from runtime.learn.models import perception_chain
    from runtime.learn.trainer import Trainer
    from runtime.plugin import pluginmanager
    from runtime.wire.spaces import agent_spaces

    overrides = {"distillation": {"device": device, "dtype": dtype}}
    settings = Settings.of(config.load(EXAMPLE, environ={}, overrides=overrides))
    torch.set_num_threads(settings.distillation.torch_threads)
    plugins = pluginmanager.load(settings.plugins.table())
    observation_space, action_space = agent_spaces(settings.agent.table())
    chain = perception_chain(plugins, settings, observation_space)
    features = np.stack([chain(obs, b"bench") for obs in observations(TRAIN_SAMPLES, seed=2)]).astype(np.float32)
    trainer = Trainer(plugins, settings, observation_space, action_space)
    labels = np.random.default_rng(0).normal(size=(TRAIN_SAMPLES, 3)).astype(np.float32)
    trainer.add_labelled(features, labels)
    for _ in range(5):
        trainer.train_step()
    steps = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        trainer.train_step()  # .item() on the loss: every step waits for the device
        steps += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return round(steps / (time.perf_counter() - started), 1)


# --------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    seconds = 1.0 if args.quick else args.seconds
    bursts = 5 if args.quick else args.bursts
    chosen, gpu, skipped = placements()
    if skipped:
        benchlib.progress(f"GPU half skipped: {skipped}")
    teacher: dict[str, Any] = {}
    distiller: dict[str, float] = {}
    for device, dtype in chosen:
        teacher[name(device, dtype)] = measure_teacher(device, dtype, seconds, bursts)
        distiller[name(device, dtype)] = measure_distiller(device, dtype, seconds)
        benchlib.progress(f"distiller {name(device, dtype)}: {distiller[name(device, dtype)]} steps/s")
    summary = {
        "model": "builtin:mountaincar_cnn (examples/mountaincar_cnn.toml)",
        "gpu": gpu,
        "gpu_skipped": skipped,
        "teacher_us_per_obs": {where: figures["us_per_obs"] for where, figures in teacher.items()},
        "teacher_burst": {where: figures["burst"] for where, figures in teacher.items()},
        "distiller_steps_per_s": distiller,
    }
    print_table(summary)
    return summary


def print_table(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"teacher and distiller by placement (GPU: {summary['gpu'] or 'none'})")
    table.add_column("placement")
    for batch in BATCHES:
        table.add_column(f"teacher µs/obs, batch {batch}", justify="right")
    table.add_column("burst requests/batch", justify="right")
    table.add_column("distiller steps/s", justify="right")
    for where, figures in summary["teacher_us_per_obs"].items():
        table.add_row(
            where,
            *(f"{figures[str(batch)]:.1f}" for batch in BATCHES),
            f"{summary['teacher_burst'][where]['requests_per_batch']:.2f}",
            f"{summary['distiller_steps_per_s'][where]:.0f}",
        )
    out = benchlib.console()
    out.print(table)
    if summary["gpu_skipped"]:
        out.print(f"GPU half skipped: {summary['gpu_skipped']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="window per measurement")
    parser.add_argument("--bursts", type=int, default=20, help="bursts of 16 one-observation requests")
    parser.add_argument("--quick", action="store_true", help="1 s windows, 5 bursts")
    return benchlib.main("gpu", run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
