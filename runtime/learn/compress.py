"""Compressing a student version for small devices: structured pruning, int8 weights and
distillation fine-tuning, judged by the promotion gate every candidate of the distiller passes.

``compress`` takes a version from the registry (the serving one by default) and:

1. prunes ``prune`` of each hidden layer's units (``runtime.learn.nets.prune_mlp``): a smaller
   dense MLP, so bytes and time shrink without sparse kernels;
2. fine-tunes the pruned network for ``finetune_steps`` with the configured distillation strategy on
   the teacher's labels the distiller saved (its replay buffer, ``checkpoints/learner.safetensors``);
   the held-out set is never trained on, because the gate judges on it;
3. stores the weights as int8 with one scale per output unit (``Int8Linear``), if ``int8``;
4. judges the result with ``Trainer.judge`` (held-out agreement against the serving version, within
   ``distillation.promotion_margin``) and records it as the next version, its parent the version it
   was made from, its checkpoint metadata saying how it was compressed and what shape it has.

A promoted compressed version serves like any other: decision builds it from its checkpoint's
metadata (``build_compressed``); the distiller judges later candidates against it and trains on from
the newest float version, so a float candidate that agrees better replaces it.

**A stopped run directory only.** The distiller is the registry's only writer while a daemon runs
(it numbers versions in memory), so ``compress`` holds the run directory's lock throughout: it
refuses while a daemon runs there, and a daemon started meanwhile is refused until it is done. The
version itself is written as the registry's one transaction (``Registry.add``).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime import rundir
from runtime.config import Settings
from runtime.errors import AgentrtError
from runtime.learn.checkpoints import LEARNER_DATA, read_arrays, read_checkpoint
from runtime.learn.loop import Decider
from runtime.learn.registry import (
    CHECKPOINTS,
    FILE_NAME,
    PROMOTED,
    QUARANTINED,
    REJECTED,
    WRITING,
    Registry,
    VersionRecord,
    checkpoint_path,
)
from runtime.learn.trainer import Trainer
from runtime.plugin import pluginmanager
from runtime.wire.spaces import agent_spaces

#: Single-observation decisions timed for the latency figure (their median).
LATENCY_REPEATS = 500


class CompressError(AgentrtError):
    """A version cannot be compressed: no registry or saved labels, a student that is not an MLP,
    a version that is compressed already."""


@dataclass(frozen=True)
class Compression:
    int8: bool = False
    prune: float = 0.0  # the share of each hidden layer's units removed
    finetune_steps: int = 0

    def check(self) -> None:
        if not 0 <= self.prune < 1:
            raise CompressError(f"--prune must be in [0, 1), not {self.prune}")
        if self.finetune_steps < 0:
            raise CompressError(f"--finetune-steps must be >= 0, not {self.finetune_steps}")
        if not self.int8 and not self.prune:
            raise CompressError("nothing to do: ask for --int8, --prune or both")


@dataclass(frozen=True)
class Footprint:
    """What a student version costs where it runs."""

    bytes: int  # its checkpoint file, header and metadata included
    weight_bytes: int  # its tensors alone
    params: int  # nonzero parameters (int8 weights, scales and biases of a compressed one)
    latency_us: float  # median single-observation forward, as decision runs it


def footprint(decider: Decider, path: Path, probe: np.ndarray) -> Footprint:
    """Serve the checkpoint at ``path`` with ``decider`` and measure it."""
    tensors, metadata = read_checkpoint(path)
    decider.serve(0, tensors, metadata)
    timings = []
    for index in range(LATENCY_REPEATS):
        row = probe[index % len(probe)][None]
        started = time.perf_counter()
        decider.forward(row)
        timings.append(time.perf_counter() - started)
    return Footprint(
        bytes=path.stat().st_size,
        weight_bytes=sum(t.numel() * t.element_size() for t in tensors.values()),
        params=sum(int(t.count_nonzero()) for t in tensors.values()),
        latency_us=round(statistics.median(timings) * 1e6, 2),
    )


def compress(config: dict[str, Any], compression: Compression, version: int | None = None) -> dict[str, Any]:
    """Compress ``version`` (default: the serving one) of the run directory ``config`` names, record it
    as the next version through the promotion gate, and report it beside its parent (see the module
    docstring). The student, strategy and data settings are those the daemon last ran with there
    (its configuration snapshot), not ``config``'s. Raises CompressError, DaemonError while a daemon
    runs there."""
    compression.check()
    run_dir = Path(config["daemon"]["run_dir"])
    if not (run_dir / FILE_NAME).exists():
        raise CompressError(f"no student registry in {run_dir}: train a student there first")
    snapshot = run_dir / rundir.CONFIG_SNAPSHOT
    if snapshot.exists():  # the configuration its versions were trained under (wherever the directory is now)
        config = {**json.loads(snapshot.read_text()), "daemon": config["daemon"]}
    # Compressed students serve on the CPU (int8 kernels are CPU kernels): fine-tuned and scored
    # there too, whatever distillation.device and decision.device say.
    cpu = {"device": "cpu", "dtype": "float32"}
    settings = Settings.of(
        {**config, "distillation": {**config["distillation"], **cpu}, "decision": {**config["decision"], **cpu}}
    )
    with rundir.stopped(run_dir, "agentrt student compress"):
        registry = Registry(run_dir)
        try:
            return _compress(settings, registry, compression, version)
        finally:
            registry.close()


def _compress(settings: Settings, registry: Registry, compression: Compression, version: int | None) -> dict[str, Any]:
    import torch

    from runtime.learn.nets import MLP, compressed_metadata, is_compressed, prune_mlp, quantize_int8, weights_of

    plugins = pluginmanager.load(settings.plugins.table())
    observation_space, action_space = agent_spaces(settings.agent.table())
    parent = registry.get(version if version is not None else registry.serving())
    if parent is None or parent.status in (WRITING, QUARANTINED):
        raise CompressError(f"no readable student version {version if version is not None else 'serving'}")
    tensors, metadata = read_checkpoint(registry.file(parent))
    if is_compressed(metadata):
        raise CompressError(f"version {parent.version} is compressed already; compress its parent {parent.parent}")
    trainer = Trainer(plugins, settings, observation_space, action_space)
    if not isinstance(trainer.student, MLP):
        raise CompressError(f"only the mlp student can be compressed, not {settings.student.plugin!r}")
    try:
        trainer.restore_data(*run_dir_labels(registry.run_dir))
    except ValueError as exc:
        raise CompressError(f"the saved teacher labels do not fit the configured student: {exc}") from None
    if len(trainer.heldout) < settings.distillation.min_heldout:
        raise CompressError(
            f"{len(trainer.heldout)} held-out labels saved, the gate needs distillation.min_heldout = "
            f"{settings.distillation.min_heldout}: let the daemon learn longer first"
        )
    trainer.load(tensors)

    pruned: MLP = prune_mlp(trainer.student, compression.prune) if compression.prune else trainer.student
    trainer.adopt(pruned.train())
    for _ in range(compression.finetune_steps if len(trainer.buffer) else 0):
        trainer.train_step()
    pruned.eval()
    how = {**asdict(compression), "hidden": pruned.hidden, "hidden_before": trainer.scratch.hidden}
    student: torch.nn.Module = quantize_int8(pruned) if compression.int8 else pruned

    serving_version = registry.serving()
    serving_record = registry.get(serving_version)
    serving = weights_of(*read_checkpoint(registry.file(serving_record))) if serving_record else None
    verdict = trainer.judge(student, serving)
    number = registry.latest_version() + 1
    record = VersionRecord(
        number,
        parent.version,
        time.time(),
        parent.samples_seen,
        parent.train_steps + compression.finetune_steps,
        verdict.heldout_agreement,
        verdict.heldout_loss,
        verdict.serving_agreement,
        PROMOTED if verdict.promoted else REJECTED,
        checkpoint_path(number),
    )
    path = registry.add(record, dict(student.state_dict()), compressed_metadata(pruned, how))

    torch.set_num_threads(settings.decision.torch_threads)  # as decision serves it
    decider = Decider(plugins, settings, observation_space, action_space)
    probe = trainer.heldout.columns["features"][: len(trainer.heldout)]
    return {
        "version": record.version,
        "parent": parent.version,
        "status": record.status,
        "promoted": verdict.promoted,
        "heldout_agreement": verdict.heldout_agreement,
        "serving_version": serving_version,
        "serving_agreement": verdict.serving_agreement,
        "promotion_margin": settings.distillation.promotion_margin,
        "compression": how,
        "compressed": {**asdict(footprint(decider, path, probe)), "agreement": verdict.heldout_agreement},
        "original": {
            **asdict(footprint(decider, registry.file(parent), probe)),
            "agreement": trainer.score(weights_of(tensors, metadata))[0],
        },
    }


def run_dir_labels(run_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The replay buffer and held-out set the distiller saved in ``run_dir``."""
    path = run_dir / CHECKPOINTS / LEARNER_DATA
    if not path.exists():
        raise CompressError(f"no teacher labels saved in {run_dir} ({path.name}): train a student there first")
    return read_arrays(path)
