"""``agentrt distill``: offline knowledge distillation on a labelled dataset, the classic workflow,
compared honestly with a tuned, regularised hard-label student.

The setting is the one distillation is for: a teacher trained on labelled data, and a small
student that may use only a few labels (``--train-size``) plus unlabelled inputs that the teacher
labels (the transfer set of Hinton et al. 2015). Per seed:

1. **Data.** The dataset is split once into stratified test (``--test-fraction``) and training
   splits, and a stratified validation split (``--validation-fraction`` of the training split) is
   held out of the training split (``--split-seed``: the same test and validation sets for every
   seed). From the rest, the pool, each seed draws ``--train-size`` stratified examples: the
   students' *labelled* examples; then ``--teacher-size`` examples whose labels only the teacher
   sees; the remainder is the *transfer set* (``--transfer-size`` caps it), whose labels nobody
   learns from.
2. **Teacher.** A large MLP (``--teacher-hidden``, default 256-256) trained with cross-entropy on
   the labelled and teacher-only examples (``--teacher-data disjoint``): never on the transfer
   set's labels, which would reach the distilled student through the teacher's outputs (label
   leakage; ``--teacher-data train`` does that, with a warning, to measure it). ``labelled``
   restricts it to the students' examples. ``--teacher PATH`` loads one instead (any file of the
   ``checkpoint`` teacher plugin; ``--save-teacher`` writes one), the same for every seed.
3. **Distilled student.** The configured student (``[student]``: ``mlp`` with ``hidden = [32]``)
   learns with the strategy (``--strategy``, default ``soft_target``) from the teacher's outputs on
   the labelled and transfer inputs; the strategy's hard labels are the true labels where the
   student has them, the teacher's argmax elsewhere. Student and strategy are built through the
   plugins, like online distillation.
4. **Baseline.** The same student architecture, from the same initial weights, trained with
   cross-entropy on the labelled examples alone, regularised by label smoothing and weight decay,
   with the same budget: ``--steps`` optimizer steps of the same batch size and learning rate.
5. **Tuning** (``--tune``, the default). Both are chosen on the validation split, never the test
   split, by the same rule and budget: eight trainings each (``STRATEGY_GRIDS``: soft_target's
   temperature x alpha, except parameters given with ``--param`` or the configuration;
   ``BASELINE_GRID``: label smoothing x weight decay), keeping the best validation accuracy.
   ``--no-tune`` trains each once (``OFFLINE_STRATEGY_PARAMS``; plain cross-entropy).
6. **Report.** Test accuracy of the three (mean ± std over ``--seeds``, default 5), the gain of
   the distilled student over the baseline (paired per seed: mean ± std and a 90% bootstrap
   interval over seeds), each seed's chosen settings, parameter counts; a rich table (or one JSON
   object with ``--json``), an optional bar chart (``--plot``). The distilled student of the seed
   best on validation is saved as safetensors (``--output``); its metadata names the student
   plugin and params, the strategy params chosen, the dataset and split, and its accuracies, so it
   can be rebuilt and checked (``load_student``).

What to expect on ``digits`` with the defaults (five seeds; the table is in docs/distillation.md):
the distilled student gains 1.3 ± 1.3 points of test accuracy over the tuned, regularised
hard-label student (90% bootstrap interval over seeds +0.6 to +2.3) and comes within half a point
of the teacher, with 35 times fewer parameters; the ``hard_label`` strategy (the teacher's argmax
on the transfer set) does as well (+1.2 ± 1.0): the gain is the teacher's labels, not its soft
probabilities. The 3.2 points published before came mostly from a teacher that had learned the
transfer set's labels (``--teacher-data train``).

Everything is deterministic given the seeds: numpy generators and ``torch.manual_seed`` derive from
the seed, and torch runs with ``distillation.torch_threads`` threads (at most 2).

Adding a dataset: put a loader in ``DATASETS`` that returns ``X`` (float32, N×D, scaled for a
network: roughly unit range; the saved student expects this scaling) and ``y`` (int64 classes 0..K-1);
a loader that imports an optional package names it in ``DATASET_MODULES``, so a run without it
stops at its start with the extra to install (``runtime.extras``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime import extras
from runtime.config import DistillationSettings, Settings
from runtime.errors import ConfigError, DistillError, ExitCode, PluginError
from runtime.learn.device import Placement, on_host, placement

if TYPE_CHECKING:
    import torch

    from runtime.learn.trainer import Optimiser
    from runtime.plugin.pluginmanager import Component, Plugins


# --- datasets --------------------------------------------------------------------------------------


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits: 1797 images, 10 classes, shipped with scikit-learn."""
    from sklearn.datasets import load_digits  # required when the run starts (DATASET_MODULES)

    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target.astype(np.int64)  # pixels 0..16 -> 0..1


#: Name -> loader returning X (float32, N×D, scaled for a network) and y (int64 class indices 0..K-1).
DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "digits": _load_digits,
}
#: Name -> the optional module its loader imports (``runtime.extras``), checked when a run starts.
DATASET_MODULES = {"digits": "sklearn"}


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name not in DATASETS:
        raise DistillError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    X, y = DATASETS[name]()
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise DistillError(f"dataset {name!r}: the loader must return X (N, D) and y (N,), got {X.shape} and {y.shape}")
    return np.ascontiguousarray(X, dtype=np.float32), np.ascontiguousarray(y, dtype=np.int64)


def stratified_sample(y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``size`` elements of ``y``: each class in proportion (largest remainders,
    ties by class order), chosen at random within its class."""
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * size / len(y)
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: size - take.sum()]] += 1
    chosen = [
        rng.choice(np.flatnonzero(y == label), count, replace=False) for label, count in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def train_test_split(y: np.ndarray, test_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train indices, test indices); the same for the same labels, fraction and seed."""
    test = stratified_sample(y, round(len(y) * test_fraction), np.random.default_rng(split_seed))
    return np.setdiff1d(np.arange(len(y)), test), test


@dataclass
class Data:
    X: np.ndarray
    y: np.ndarray
    train: np.ndarray  # the training pool: labelled, teacher-only and transfer examples come from it
    test: np.ndarray
    classes: int
    validation: np.ndarray  # held out of the training split to choose settings; never trained on

    @property
    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        return self.X[self.test], self.y[self.test]

    @property
    def validation_set(self) -> tuple[np.ndarray, np.ndarray]:
        return self.X[self.validation], self.y[self.validation]


def prepare_data(
    dataset: str, test_fraction: float = 0.3, split_seed: int = 0, validation_fraction: float = 0.2
) -> Data:
    """The dataset and its splits, as ``agentrt distill`` uses them: a stratified test split, then a
    stratified validation split of ``validation_fraction`` of the rest; the remainder is the pool."""
    X, y = load_dataset(dataset)
    train, test = train_test_split(y, test_fraction, split_seed)
    pool, validation = train_test_split(y[train], validation_fraction, split_seed + 1)
    return Data(X, y, train[pool], test, int(y.max()) + 1, train[validation])


# --- settings --------------------------------------------------------------------------------------

#: Whose labels the teacher learns: "disjoint" the students' labelled examples and ``teacher_size``
#: more that only it sees, never the transfer set's; "labelled" the students' labelled examples
#: alone; "train" the whole pool, transfer set included (the students then learn the transfer
#: set's true labels through the teacher: label leakage, kept to measure it).
TEACHER_DATA = ("disjoint", "labelled", "train")


@dataclass
class OfflineSettings:
    dataset: str = "digits"
    seeds: int = 5
    first_seed: int = 0
    train_size: int = 300
    transfer_size: int | None = None  # None: the whole rest of the training pool
    test_fraction: float = 0.3
    validation_fraction: float = 0.2
    split_seed: int = 0
    teacher_size: int = 300
    steps: int = 1500
    teacher_steps: int = 1500
    batch_size: int = 128
    learning_rate: float = 3e-3
    teacher_hidden: list[int] = field(default_factory=lambda: [256, 256])
    teacher_data: str = "disjoint"
    teacher_path: str | None = None
    student: str = "mlp"
    student_params: dict[str, Any] = field(default_factory=lambda: {"hidden": [32]})
    strategy: str = "soft_target"
    strategy_params: dict[str, Any] = field(default_factory=dict)  # given ones: fixed, never tuned
    tune: bool = True
    threads: int = 1
    output: str | None = None
    save_teacher: str | None = None
    #: Where every network trains and is evaluated: ``[distillation] device`` and ``dtype``.
    where: Placement = field(default_factory=lambda: on_host("distillation"))


def default_of(name: str) -> Any:
    """``OfflineSettings``' default for ``name``, without building one: that resolves its placement,
    which imports torch, and every agentrt command (the daemon itself too) builds the CLI's parser."""
    declared = next(f for f in fields(OfflineSettings) if f.name == name)
    return declared.default if declared.default_factory is MISSING else declared.default_factory()


#: Strategy parameters for offline distillation without tuning (``--no-tune``), when neither the
#: configuration file nor ``--param`` sets them. Offline, the soft targets must carry what the few
#: labels cannot, so they dominate (alpha 0.9) and are soft (T = 4).
OFFLINE_STRATEGY_PARAMS: dict[str, dict[str, Any]] = {
    "soft_target": {"temperature": 4.0, "alpha": 0.9},
}
#: What tuning searches, on the validation split, per strategy (parameters given with ``--param``
#: or the configuration stay fixed) and for the hard-label baseline. Both get eight trainings and
#: keep the one with the best validation accuracy (the first of equals), so neither is tuned harder.
STRATEGY_GRIDS: dict[str, dict[str, list[Any]]] = {
    "soft_target": {"temperature": [1.0, 2.0, 4.0, 8.0], "alpha": [0.5, 0.9]},
}
BASELINE_GRID: dict[str, list[Any]] = {"label_smoothing": [0.0, 0.1, 0.2, 0.3], "weight_decay": [0.0, 1e-3]}


def grid_points(fixed: dict[str, Any], axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the ``axes`` not in ``fixed``, each with ``fixed``, in order."""
    free = {name: values for name, values in axes.items() if name not in fixed}
    return [{**fixed, **dict(zip(free, values, strict=True))} for values in itertools.product(*free.values())]


def strategy_candidates(settings: OfflineSettings) -> list[dict[str, Any]]:
    """The distilled student's strategy parameters to try (one set without tuning)."""
    if settings.tune:
        return grid_points(settings.strategy_params, STRATEGY_GRIDS.get(settings.strategy, {}))
    return [{**OFFLINE_STRATEGY_PARAMS.get(settings.strategy, {}), **settings.strategy_params}]


def baseline_candidates(settings: OfflineSettings) -> list[dict[str, Any]]:
    """The hard-label baseline's regularisers to try (plain cross-entropy without tuning)."""
    return grid_points({}, BASELINE_GRID) if settings.tune else [{"label_smoothing": 0.0, "weight_decay": 0.0}]


def steps_per_seed(settings: OfflineSettings) -> int:
    """Optimizer steps one seed takes: the teacher's, then every candidate's."""
    candidates = len(strategy_candidates(settings)) + len(baseline_candidates(settings))
    return (0 if settings.teacher_path else settings.teacher_steps) + candidates * settings.steps


def parse_assignments(flag: str, items: list[str] | None) -> dict[str, Any]:
    """``key=value`` strings to a dict. Values are TOML values (``4``, ``0.9``, ``true``, ``[32]``,
    ``"text"``); a bare word is taken as a string (``direction=reverse``)."""
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key or not raw:
            raise DistillError(f"{flag} {item!r}: expected key=value, e.g. {flag} temperature=4")
        try:
            result[key] = tomllib.loads(f"value = {raw}")["value"]
        except tomllib.TOMLDecodeError:
            if not raw.replace("_", "").replace("-", "").isalnum():
                raise DistillError(
                    f'{flag} {item!r}: {raw!r} is not a TOML value (a number, true or false, a [list], a "string")'
                ) from None
            result[key] = raw
    return result


def settings_from_args(args: argparse.Namespace, config: Settings) -> OfflineSettings:
    """The flags over the configuration file ([student], [distillation]); DistillError for a bad value.

    Strategy parameters: those of ``[distillation] params`` when the configuration file sets its own
    and names the same strategy, updated by ``--param``; these stay fixed, the rest are tuned (or,
    with ``--no-tune``, taken from ``OFFLINE_STRATEGY_PARAMS``).
    """
    distillation = config.distillation
    strategy = args.strategy or distillation.strategy
    own_params = distillation.params != DistillationSettings().params
    strategy_params = dict(distillation.params) if strategy == distillation.strategy and own_params else {}
    strategy_params.update(parse_assignments("--param", args.param))
    student = args.student or config.student.plugin
    student_params = dict(config.student.params) if student == config.student.plugin else {}
    student_params.update(parse_assignments("--student-param", args.student_param))
    settings = OfflineSettings(
        dataset=args.dataset,
        seeds=args.seeds,
        first_seed=distillation.seed if args.first_seed is None else args.first_seed,
        train_size=args.train_size,
        transfer_size=args.transfer_size,
        test_fraction=args.test_fraction,
        validation_fraction=args.validation_fraction,
        split_seed=args.split_seed,
        teacher_size=args.teacher_size,
        steps=args.steps,
        teacher_steps=args.teacher_steps,
        batch_size=distillation.batch_size if args.batch_size is None else args.batch_size,
        learning_rate=distillation.learning_rate if args.lr is None else args.lr,
        teacher_hidden=list(args.teacher_hidden or default_of("teacher_hidden")),
        teacher_data=args.teacher_data,
        teacher_path=args.teacher,
        student=student,
        student_params=student_params,
        strategy=strategy,
        strategy_params=strategy_params,
        tune=args.tune,
        threads=min(distillation.torch_threads, 2),
        output=args.output or None,
        save_teacher=args.save_teacher or None,
        where=placement(config, "distillation"),
    )
    check(settings)
    return settings


def check(settings: OfflineSettings) -> None:
    """Raise DistillError naming the first bad setting (before anything is loaded or trained)."""
    if settings.dataset not in DATASETS:
        raise DistillError(f"unknown dataset {settings.dataset!r}; available: {', '.join(sorted(DATASETS))}")
    for name in ("seeds", "train_size", "steps", "teacher_steps", "batch_size"):
        value = getattr(settings, name)
        if value < 1:
            raise DistillError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    for name in ("transfer_size", "teacher_size"):
        value = getattr(settings, name)
        if value is not None and value < 0:
            raise DistillError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    for name in ("test_fraction", "validation_fraction"):
        if not 0 < getattr(settings, name) < 1:
            raise DistillError(f"--{name.replace('_', '-')} must be between 0 and 1, got {getattr(settings, name)}")
    if not settings.learning_rate > 0:
        raise DistillError(f"--lr must be > 0, got {settings.learning_rate}")
    if not settings.teacher_hidden or min(settings.teacher_hidden) < 1:
        raise DistillError(f"--teacher-hidden must be positive layer widths, got {settings.teacher_hidden}")
    if settings.teacher_data not in TEACHER_DATA:
        raise DistillError(f"--teacher-data {settings.teacher_data!r}: expected one of {', '.join(TEACHER_DATA)}")
    if settings.teacher_path is not None and not Path(settings.teacher_path).is_file():
        raise DistillError(f"--teacher {settings.teacher_path}: no such file")
    for flag, path in (("--output", settings.output), ("--save-teacher", settings.save_teacher)):
        check_writable(flag, path)


def check_writable(flag: str, path: str | None) -> None:
    """Fail before training, not after, for an output path that cannot be written."""
    if not path:
        return
    target = Path(path)
    if target.is_dir():
        raise DistillError(f"{flag} {path}: is a directory; give a file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DistillError(f"{flag} {path}: cannot create its directory: {exc}") from None


# --- models and training ---------------------------------------------------------------------------


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def accuracy(module: torch.nn.Module, X: np.ndarray, y: np.ndarray, where: Placement) -> float:
    import torch

    module.eval()
    with torch.no_grad(), where.autocast():
        predicted = where.host(module(where.tensor(X))).argmax(axis=1)
    return float((predicted == y).mean())


def spaces_for(data: Data):
    """The (observation space, action space) a student for ``data`` is built for."""
    from gymnasium import spaces

    return (spaces.Box(-np.inf, np.inf, shape=(data.X.shape[1],), dtype=np.float32), spaces.Discrete(data.classes))


def _batches(count: int, batch_size: int, steps: int, rng: np.random.Generator):
    """``steps`` minibatches of indices into ``count`` examples: shuffled epochs, an epoch's last
    batch possibly short, so every example is seen equally often."""
    done = 0
    while True:
        order = rng.permutation(count)
        for start in range(0, count, batch_size):
            yield order[start : start + batch_size]
            done += 1
            if done == steps:
                return


def _train(
    optimiser: Optimiser,
    loss_of: Callable[[np.ndarray], torch.Tensor],
    count: int,
    settings: OfflineSettings,
    steps: int,
    rng: np.random.Generator,
    advance: Callable[[int], None],
) -> None:
    """``steps`` optimiser steps, one per minibatch of shuffled epochs over ``count`` examples."""
    optimiser.module.train()
    for step, indices in enumerate(_batches(count, settings.batch_size, steps, rng), 1):
        optimiser.step(loss_of(indices))
        if step % 50 == 0 or step == steps:
            advance(step % 50 or 50)
    optimiser.module.eval()


def _fit_labels(
    module: torch.nn.Module,
    data: Data,
    examples: np.ndarray,
    settings: OfflineSettings,
    steps: int,
    rng: np.random.Generator,
    advance: Callable[[int], None],
    label_smoothing: float = 0.0,
    weight_decay: float = 0.0,
) -> None:
    """Cross-entropy on the true labels of ``examples`` (how the teacher and the hard-label baseline
    learn), optionally regularised by label smoothing and weight decay (the baseline's)."""
    import torch.nn.functional as F

    from runtime.learn.trainer import Optimiser

    where = settings.where
    X, y = where.tensor(data.X[examples]), where.tensor(data.y[examples])

    def loss_of(indices: np.ndarray) -> torch.Tensor:
        with where.autocast():
            return F.cross_entropy(module(X[indices]), y[indices], label_smoothing=label_smoothing)

    _train(
        Optimiser(module, settings.learning_rate, weight_decay=weight_decay),
        loss_of,
        len(examples),
        settings,
        steps,
        rng,
        advance,
    )


def train_teacher(
    settings: OfflineSettings,
    plugins: Plugins,
    data: Data,
    examples: np.ndarray,
    seed: int,
    advance: Callable[[int], None],
) -> torch.nn.Module:
    """A fresh MLP teacher (the ``mlp`` student component, made large) trained with cross-entropy on
    ``examples`` (indices into the data); saved, it loads with the ``checkpoint`` teacher."""
    import torch

    torch.manual_seed(seed)
    teacher = plugins.build("student", "mlp", {"hidden": list(settings.teacher_hidden)}, *spaces_for(data))
    teacher.to(settings.where.device)
    _fit_labels(teacher, data, examples, settings, settings.teacher_steps, np.random.default_rng([seed, 1]), advance)
    return teacher


def distil_student(
    settings: OfflineSettings,
    data: Data,
    student: torch.nn.Module,
    strategy: Any,
    component: Component,
    teacher: torch.nn.Module,
    teacher_temperature: float | None,
    labelled: np.ndarray,
    transfer: np.ndarray,
    seed: int,
    advance: Callable[[int], None],
) -> None:
    """Train ``student`` with ``strategy`` (``component``) on the teacher's outputs for the labelled
    and transfer inputs, with online distillation's optimiser, loss checks and running agreement;
    ``teacher_temperature`` is a loaded teacher's calibrated one (``StrategyInputs``).

    Hidden features go to the strategy when both networks expose ``forward_features`` (for
    ``feature_hints``); ``agreement`` is the student's running agreement with the teacher (for
    ``adaptive``), measured on each minibatch before the step, as online on fresh labels.
    """
    import torch

    from runtime.learn.evaluation import agreement_and_loss
    from runtime.learn.trainer import Optimiser, forward_with_features, running_agreement, strategy_loss
    from runtime.plugin.interfaces import StrategyInputs

    where = settings.where
    inputs = np.concatenate([labelled, transfer])
    X = where.tensor(data.X[inputs])
    teacher.eval()
    with torch.no_grad(), where.autocast():
        teacher_outputs, teacher_features = forward_with_features(teacher, X)
    # Targets in float32, as the online distiller gets them from the wire.
    teacher_outputs = teacher_outputs.float()
    teacher_features = None if teacher_features is None else teacher_features.float()
    hard = teacher_outputs.argmax(dim=1)
    hard[: len(labelled)] = where.tensor(data.y[labelled])  # true labels where the student has them
    agreement: list[float | None] = [None]

    def loss_of(indices: np.ndarray) -> torch.Tensor:
        with where.autocast():
            outputs, features = forward_with_features(student, X[indices])
        agree, _ = agreement_and_loss(where.host(outputs), where.host(teacher_outputs[indices]), discrete=True)
        agreement[0] = running_agreement(agreement[0], agree, len(indices))
        return strategy_loss(
            component,
            strategy,
            StrategyInputs(
                student_outputs=outputs,
                teacher_outputs=teacher_outputs[indices],
                hard_labels=hard[indices],
                student_features=features,
                teacher_features=None if features is None or teacher_features is None else teacher_features[indices],
                agreement=agreement[0],
                teacher_temperature=teacher_temperature,
            ),
        )

    _train(
        Optimiser(student, settings.learning_rate, strategy),
        loss_of,
        len(inputs),
        settings,
        settings.steps,
        np.random.default_rng([seed, 2]),
        advance,
    )


def train_hard_label(
    settings: OfflineSettings,
    data: Data,
    student: torch.nn.Module,
    labelled: np.ndarray,
    seed: int,
    advance: Callable[[int], None],
    label_smoothing: float = 0.0,
    weight_decay: float = 0.0,
) -> None:
    """The baseline: cross-entropy on the labelled examples alone, same steps, batch size and rate,
    with the given regularisers."""
    _fit_labels(
        student,
        data,
        labelled,
        settings,
        settings.steps,
        np.random.default_rng([seed, 3]),
        advance,
        label_smoothing,
        weight_decay,
    )


def load_student(path: str | Path, plugins: Plugins) -> tuple[torch.nn.Module, dict[str, str]]:
    """Rebuild a student saved by ``agentrt distill`` from its file alone: (module, metadata)."""
    from gymnasium import spaces

    from runtime.learn.checkpoints import load_safetensors

    state, metadata = load_safetensors(path)
    observation_space = spaces.Box(-np.inf, np.inf, shape=(int(metadata["input_size"]),), dtype=np.float32)
    student = plugins.build(
        "student",
        metadata["student_plugin"],
        json.loads(metadata["student_params"]),
        observation_space,
        spaces.Discrete(int(metadata["classes"])),
    )
    student.load_state_dict(state)
    return student.eval(), metadata


# --- the workflow ----------------------------------------------------------------------------------


@dataclass
class Tuned:
    """The candidate kept: its parameters and validation accuracy."""

    params: dict[str, Any]
    validation_accuracy: float
    module: Any = None


@dataclass
class SeedResult:
    seed: int
    teacher_accuracy: float
    distilled_accuracy: float
    hard_label_accuracy: float
    distilled: Tuned
    hard_label: Tuned
    student: Any = None  # the distilled student (torch module), kept to save the best
    teacher: Any = None


def tuned(
    candidates: list[dict[str, Any]], train: Callable[[dict[str, Any]], Any], data: Data, where: Placement
) -> Tuned:
    """Train every candidate; keep the best on the validation split (the first of equals)."""
    best: Tuned | None = None
    for params in candidates:
        module = train(params)
        score = accuracy(module, *data.validation_set, where)
        if best is None or score > best.validation_accuracy:
            best = Tuned(params, score, module)
    assert best is not None, "at least one candidate"
    return best


@dataclass
class Candidates:
    """Trains one seed's candidate students, each from the same initial weights (paired comparisons)."""

    settings: OfflineSettings
    data: Data
    plugins: Plugins
    make_student: Callable[[], Any]
    make_strategy: Callable[[dict[str, Any]], Any]
    initial: dict[str, Any]
    teacher: Any
    teacher_temperature: float | None
    labelled: np.ndarray
    transfer: np.ndarray
    seed: int
    advance: Callable[[int], None]

    def fresh(self) -> Any:
        student = self.make_student().to(self.settings.where.device)
        student.load_state_dict(self.initial)
        return student

    def distilled(self, params: dict[str, Any]) -> Any:
        """A student distilled with the strategy at ``params``."""
        import torch

        student = self.fresh()
        strategy = self.make_strategy(params)
        if isinstance(strategy, torch.nn.Module):  # its own parameters (a projection) train beside
            strategy.to(self.settings.where.device)
        distil_student(
            self.settings,
            self.data,
            student,
            strategy,
            self.plugins.get("strategy", self.settings.strategy),
            self.teacher,
            self.teacher_temperature,
            self.labelled,
            self.transfer,
            self.seed,
            self.advance,
        )
        return student

    def hard_label(self, params: dict[str, Any]) -> Any:
        """A student trained on the labelled examples alone, with the regularisers in ``params``."""
        student = self.fresh()
        train_hard_label(self.settings, self.data, student, self.labelled, self.seed, self.advance, **params)
        return student


def partition(settings: OfflineSettings, data: Data, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint (labelled, teacher-only, transfer) indices of one seed, drawn from the training pool:
    ``train_size`` stratified labelled examples, then (with ``teacher_data = "disjoint"`` and a
    teacher to train) ``teacher_size`` examples only the teacher sees, the rest the transfer set."""
    rng = np.random.default_rng([seed, 0])
    labelled = data.train[stratified_sample(data.y[data.train], settings.train_size, rng)]
    rest = rng.permutation(np.setdiff1d(data.train, labelled))
    own = settings.teacher_size if settings.teacher_data == "disjoint" and settings.teacher_path is None else 0
    teacher_only, rest = np.sort(rest[:own]), rest[own:]
    transfer = np.sort(rest[: settings.transfer_size] if settings.transfer_size is not None else rest)
    return labelled, teacher_only, transfer


def run(
    settings: OfflineSettings,
    plugins: Plugins,
    advance: Callable[[int], None] | None = None,
    describe: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The whole workflow; returns the summary that ``--json`` prints. ``advance(n)`` hears of every
    ``n`` training steps done, ``describe(text)`` of each phase. Raises DistillError for bad input."""
    import torch

    from runtime.errors import PluginError

    check(settings)
    advance = advance or (lambda n: None)
    describe = describe or (lambda text: None)
    started = time.monotonic()
    torch.set_num_threads(settings.threads)
    data = prepare_data(settings.dataset, settings.test_fraction, settings.split_seed, settings.validation_fraction)
    own = settings.teacher_size if settings.teacher_data == "disjoint" and settings.teacher_path is None else 0
    if not data.classes <= settings.train_size <= len(data.train) - own:
        raise DistillError(
            f"--train-size {settings.train_size}: expected between the {data.classes} classes "
            f"and the {len(data.train) - own} training examples of {settings.dataset!r} "
            f"left by the validation split and the teacher's own {own}"
        )
    observation_space, action_space = spaces_for(data)
    strategy_grid, baseline_grid = strategy_candidates(settings), baseline_candidates(settings)

    def make_student() -> torch.nn.Module:
        return plugins.build(
            "student", settings.student, dict(settings.student_params), observation_space, action_space
        )

    def make_strategy(params: dict[str, Any]) -> Any:
        return plugins.build("strategy", settings.strategy, dict(params), action_space)

    warnings: list[str] = []
    if settings.teacher_data == "train" and settings.teacher_path is None and settings.transfer_size != 0:
        warnings.append("--teacher-data train: the teacher learned the transfer set's labels (label leakage)")
    try:
        make_student()  # a bad name or parameter fails now, before any training
        for params in strategy_grid:
            make_strategy(params)
        loaded = (
            None
            if settings.teacher_path is None
            else load_teacher(settings, settings.teacher_path, plugins, data, warnings)
        )
    except PluginError as exc:
        raise DistillError(str(exc)) from None
    results: list[SeedResult] = []
    for number, seed in enumerate(range(settings.first_seed, settings.first_seed + settings.seeds), 1):
        prefix = f"seed {seed} ({number}/{settings.seeds})"
        labelled, teacher_only, transfer = partition(settings, data, seed)
        if loaded is None:
            describe(f"{prefix}: teacher")
            examples = {
                "disjoint": np.concatenate([labelled, teacher_only]),
                "labelled": labelled,
                "train": data.train,
            }[settings.teacher_data]
            teacher, teacher_temperature = train_teacher(settings, plugins, data, examples, seed, advance), None
        else:
            teacher, teacher_temperature = loaded
        torch.manual_seed(seed)
        initial = {name: tensor.clone() for name, tensor in make_student().state_dict().items()}

        candidates = Candidates(
            settings,
            data,
            plugins,
            make_student,
            make_strategy,
            initial,
            teacher,
            teacher_temperature,
            labelled,
            transfer,
            seed,
            advance,
        )
        describe(f"{prefix}: distilled students")
        student = tuned(strategy_grid, candidates.distilled, data, settings.where)
        describe(f"{prefix}: hard-label students")
        baseline = tuned(baseline_grid, candidates.hard_label, data, settings.where)
        X_test, y_test = data.test_set
        results.append(
            SeedResult(
                seed,
                accuracy(teacher, X_test, y_test, settings.where),
                accuracy(student.module, X_test, y_test, settings.where),
                accuracy(baseline.module, X_test, y_test, settings.where),
                Tuned(student.params, student.validation_accuracy),
                Tuned(baseline.params, baseline.validation_accuracy),
                student.module,
                teacher,
            )
        )
    # Chosen on validation, not test: its test accuracy stays an honest estimate.
    best = max(results, key=lambda r: r.distilled.validation_accuracy)  # the first of equals: the lowest seed
    summary = _summary(settings, data, results, best, len(labelled), len(teacher_only), len(transfer))
    if settings.output:
        save_student(settings, settings.output, best, data)
        summary["output"] = settings.output
    if settings.save_teacher:
        save_teacher(settings, settings.save_teacher, best, data)
        summary["teacher_output"] = settings.save_teacher
    summary["warnings"] = warnings
    summary["duration_s"] = round(time.monotonic() - started, 2)
    return summary


def load_teacher(
    settings: OfflineSettings, teacher_path: str, plugins: Plugins, data: Data, warnings: list[str]
) -> tuple[torch.nn.Module, float | None]:
    """The ``--teacher`` file, through the ``checkpoint`` teacher plugin (which checks its shapes):
    its network and its calibrated temperature, if it has one."""
    from runtime.errors import PluginError
    from runtime.learn.checkpoints import load_safetensors
    from runtime.learn.models import teacher_temperature

    path = str(Path(teacher_path).absolute())
    try:
        teacher = plugins.build("teacher", "checkpoint", {"path": path}, *spaces_for(data))
    except PluginError as exc:
        raise DistillError(f"--teacher {teacher_path}: {exc}") from None
    metadata = load_safetensors(path)[1]
    trained_on = (metadata.get("dataset"), metadata.get("split_seed"), metadata.get("test_fraction"))
    if trained_on[0] is not None and trained_on != (
        settings.dataset,
        str(settings.split_seed),
        repr(settings.test_fraction),
    ):
        warnings.append(
            f"the teacher was trained on {trained_on[0]!r} with split seed {trained_on[1]} and test "
            f"fraction {trained_on[2]}: its training data may overlap this test set"
        )
    return teacher.module.to(settings.where.device), teacher_temperature(teacher)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def bootstrap_interval(values: list[float], level: float = 0.9, resamples: int = 10_000) -> list[float]:
    """A ``level`` bootstrap interval of the mean of ``values`` (resampled with a fixed seed)."""
    samples = np.asarray(values, dtype=np.float64)
    means = samples[np.random.default_rng(0).integers(0, len(samples), (resamples, len(samples)))].mean(axis=1)
    return [float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))]


def _summary(
    settings: OfflineSettings,
    data: Data,
    results: list[SeedResult],
    best: SeedResult,
    labelled_size: int,
    teacher_only_size: int,
    transfer_size: int,
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "dataset": settings.dataset,
        "seeds": [r.seed for r in results],
        "train_size": labelled_size,
        "transfer_size": transfer_size,
        "teacher_only_size": teacher_only_size,
        "validation_size": len(data.validation),
        "test_size": len(data.test),
        "tuned": settings.tune,
        "steps": settings.steps,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "device": str(settings.where),
        "teacher": (
            {"path": settings.teacher_path}
            if settings.teacher_path
            else {"hidden": settings.teacher_hidden, "data": settings.teacher_data, "steps": settings.teacher_steps}
        ),
        "student": {"plugin": settings.student, "params": settings.student_params},
        "strategy": {
            "name": settings.strategy,
            "params": settings.strategy_params,
            "grid": STRATEGY_GRIDS.get(settings.strategy, {}) if settings.tune else {},
        },
        "hard_label_grid": BASELINE_GRID if settings.tune else {},
    }
    for name in ("teacher", "distilled", "hard_label"):
        summary[f"{name}_accuracy"], summary[f"{name}_accuracy_std"] = _mean_std(
            [getattr(r, f"{name}_accuracy") for r in results]
        )
    # The gain is paired: both students of a seed start from the same weights and the same labels.
    gains = [r.distilled_accuracy - r.hard_label_accuracy for r in results]
    summary["improvement"], summary["improvement_std"] = _mean_std(gains)
    summary["improvement_interval"] = bootstrap_interval(gains)
    summary["per_seed"] = [
        {
            "seed": r.seed,
            "teacher_accuracy": r.teacher_accuracy,
            "distilled_accuracy": r.distilled_accuracy,
            "hard_label_accuracy": r.hard_label_accuracy,
            "distilled_params": r.distilled.params,
            "distilled_validation_accuracy": r.distilled.validation_accuracy,
            "hard_label_params": r.hard_label.params,
            "hard_label_validation_accuracy": r.hard_label.validation_accuracy,
        }
        for r in results
    ]
    summary["student_params"] = parameter_count(best.student)
    summary["teacher_params"] = parameter_count(best.teacher)
    summary["best_seed"] = best.seed
    return summary


def save_student(settings: OfflineSettings, output: str, best: SeedResult, data: Data) -> None:
    """The best distilled student; its metadata says how to rebuild it and what it scored on which data."""
    metadata = {
        "format": "agentrt-distill-student",
        "student_plugin": settings.student,
        "student_params": json.dumps(settings.student_params),
        "input_size": str(data.X.shape[1]),
        "classes": str(data.classes),
        "train_size": str(settings.train_size),
        "strategy": settings.strategy,
        "strategy_params": json.dumps(best.distilled.params),
        "validation_accuracy": repr(best.distilled.validation_accuracy),
        "test_accuracy": repr(best.distilled_accuracy),
        "teacher_accuracy": repr(best.teacher_accuracy),
    }
    _save(best.student, "--output", output, metadata, settings, best)


def save_teacher(settings: OfflineSettings, path: str, best: SeedResult, data: Data) -> None:
    """The best seed's teacher, in the ``checkpoint`` teacher plugin's format: ``--teacher PATH`` and
    ``[teacher] plugin = "checkpoint"`` both load it."""
    from runtime.learn.nets import MLP

    if not isinstance(best.teacher, MLP):  # train_teacher builds the mlp student component, an MLP
        raise DistillError(f"--save-teacher: the teacher is a {type(best.teacher).__name__}, not an MLP")
    metadata = {**best.teacher.architecture(), "test_accuracy": repr(best.teacher_accuracy)}
    _save(best.teacher, "--save-teacher", path, metadata, settings, best)


def _save(
    module: torch.nn.Module, flag: str, path: str, metadata: dict[str, str], settings: OfflineSettings, best: SeedResult
) -> None:
    """Write ``module`` with ``metadata`` and where it came from (dataset, split, seed); a path that
    cannot be written is the flag's fault."""
    from runtime.learn.checkpoints import save_safetensors

    provenance = {
        "dataset": settings.dataset,
        "test_fraction": repr(settings.test_fraction),
        "split_seed": str(settings.split_seed),
        "seed": str(best.seed),
    }
    try:
        save_safetensors(module.state_dict(), path, {**metadata, **provenance})
    except OSError as exc:
        raise DistillError(f"{flag} {path}: cannot write it: {exc}") from None


# --- presentation ----------------------------------------------------------------------------------


def print_summary(console: Any, summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(
        title=f"agentrt distill on {summary['dataset']}: {summary['train_size']} labels, "
        f"{summary['transfer_size']} transfer inputs, {summary['validation_size']} validation, "
        f"{summary['test_size']} test; on {summary['device']}",
        title_justify="left",
    )
    table.add_column("test accuracy")
    table.add_column("params", justify="right")
    for seed in summary["seeds"]:
        table.add_column(f"seed {seed}", justify="right")
    table.add_column("mean ± std", justify="right")
    for label, key, count in (
        ("teacher", "teacher", summary["teacher_params"]),
        ("distilled student", "distilled", summary["student_params"]),
        ("hard-label student", "hard_label", summary["student_params"]),
    ):
        table.add_row(
            label,
            f"{count:,}",
            *(f"{r[key + '_accuracy']:.1%}" for r in summary["per_seed"]),
            f"{summary[key + '_accuracy']:.1%} ± {summary[key + '_accuracy_std']:.1%}",
        )
    console.print(table)
    for key, label in (("distilled", f"strategy {summary['strategy']['name']}"), ("hard_label", "hard labels")):
        chosen = "; ".join(
            f"{r['seed']}: " + ", ".join(f"{k}={v}" for k, v in r[f"{key}_params"].items()) for r in summary["per_seed"]
        )
        console.print(f"{label}, {'chosen on validation' if summary['tuned'] else 'as given'} per seed: {chosen}")
    low, high = summary["improvement_interval"]
    console.print(
        f"{summary['steps']:,} steps per student: distillation {'gains' if summary['improvement'] >= 0 else 'loses'} "
        f"{abs(summary['improvement']) * 100:.1f} ± {summary['improvement_std'] * 100:.1f} points over hard labels "
        f"(90% interval over seeds {low * 100:+.1f} to {high * 100:+.1f}); {summary['duration_s']:.1f} s in all"
    )
    for warning in summary.get("warnings", []):
        console.print(f"[yellow]warning: {warning}")
    if "output" in summary:
        console.print(f"best distilled student (seed {summary['best_seed']}): {summary['output']}")
    if "teacher_output" in summary:
        console.print(f"its teacher: {summary['teacher_output']}")
    if "plot" in summary:
        console.print(f"chart: {summary['plot']}")


def write_plot(summary: dict[str, Any], path: str) -> None:
    """A bar chart of the mean accuracies (error bars: std over seeds; dots: the seeds)."""
    import matplotlib  # required when the run starts

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("teacher", "distilled", "hard_label")
    labels = (
        f"teacher\n{summary['teacher_params']:,} params",
        f"distilled student\n{summary['student_params']:,} params",
        f"hard-label student\n{summary['student_params']:,} params",
    )
    means = [summary[f"{key}_accuracy"] for key in keys]
    figure, axis = plt.subplots(figsize=(6.5, 4))
    bars = axis.bar(
        labels,
        means,
        yerr=[summary[f"{key}_accuracy_std"] for key in keys],
        capsize=6,
        color=["tab:gray", "tab:blue", "tab:orange"],
    )
    for index, key in enumerate(keys):
        axis.plot(
            [index] * len(summary["per_seed"]), [r[f"{key}_accuracy"] for r in summary["per_seed"]], "k.", alpha=0.6
        )
    axis.bar_label(bars, labels=[f"{mean:.1%}" for mean in means], label_type="center", color="white")
    lowest = min(r[f"{key}_accuracy"] for r in summary["per_seed"] for key in keys)
    axis.set_ylim(max(0.0, lowest - 0.05), 1.0)
    axis.set_ylabel("test accuracy")
    axis.set_title(
        f"{summary['dataset']}: {summary['train_size']} labels + {summary['transfer_size']} "
        f"transfer inputs, {len(summary['seeds'])} seeds"
    )
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise DistillError(f"--plot {path}: cannot write it: {exc}") from None
    finally:
        plt.close(figure)


# --- command line ----------------------------------------------------------------------------------


def run_distill(args: argparse.Namespace) -> int:
    """The ``agentrt distill`` handler: 0 on success, 2 for bad input, 1 when a plugin fails while
    training; messages go to stderr, the summary to stdout."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from runtime import config as config_module
    from runtime.plugin import pluginmanager

    console = Console(stderr=True)
    try:
        config = Settings.of(config_module.load(getattr(args, "config", None)))
        settings = settings_from_args(args, config)
        check_writable("--plot", args.plot)
        if settings.dataset in DATASET_MODULES:
            extras.require(DATASET_MODULES[settings.dataset], "offline", f"dataset {settings.dataset!r}")
        if args.plot:
            extras.require("matplotlib", "offline", "--plot")
        plugins = pluginmanager.load(config.plugins.table())
        per_seed = steps_per_seed(settings)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as progress:
            task = progress.add_task("loading", total=per_seed * settings.seeds)
            summary = run(
                settings,
                plugins,
                advance=lambda n: progress.advance(task, n),
                describe=lambda text: progress.update(task, description=text),
            )
        if args.plot:
            write_plot(summary, args.plot)
            summary["plot"] = args.plot
    except (DistillError, ConfigError, PluginError) as exc:  # the inputs' fault: say which, as usage
        print(f"agentrt distill: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except Exception as exc:  # e.g. a strategy whose loss does not fit these outputs
        print(f"agentrt distill: training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(Console(), summary)
    return 0


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Register ``distill`` (handler ``run_distill``) on the CLI's subcommands."""
    parser = subcommands.add_parser(
        "distill",
        help="offline distillation on a dataset: teacher, distilled and hard-label students compared",
        description="Train a teacher, distil it into the configured student, and compare with the same student "
        "trained on hard labels alone, over several seeds (see runtime/learn/offline.py).",
    )
    parser.add_argument(
        "--config",
        help="configuration file (default: $AGENTRT_CONFIG or ./agentrt.toml); "
        "read: [student], [distillation], [plugins]",
    )
    parser.add_argument("--run-dir", help="accepted like the other commands; unused")
    parser.add_argument("--dataset", default=default_of("dataset"), help=f"one of: {', '.join(sorted(DATASETS))}")
    parser.add_argument("--seeds", type=int, default=default_of("seeds"), help="seeds to run (default %(default)s)")
    parser.add_argument("--first-seed", type=int, help="the first seed (default: distillation.seed)")
    parser.add_argument(
        "--train-size",
        type=int,
        default=default_of("train_size"),
        help="labelled training examples for the students (default %(default)s)",
    )
    parser.add_argument(
        "--transfer-size",
        type=int,
        help="unlabelled training inputs the teacher labels for the distilled student "
        "(default: the rest of the training split; 0: none)",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=default_of("test_fraction"),
        help="share of the dataset held out for testing (default %(default)s)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=default_of("validation_fraction"),
        help="share of the training split held out to choose settings (default %(default)s)",
    )
    parser.add_argument("--split-seed", type=int, default=default_of("split_seed"), help="seed of the train/test split")
    parser.add_argument(
        "--steps",
        type=int,
        default=default_of("steps"),
        help="optimizer steps for each student (default %(default)s)",
    )
    parser.add_argument(
        "--teacher-steps",
        type=int,
        default=default_of("teacher_steps"),
        help="optimizer steps for the teacher (default %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, help="minibatch size (default: distillation.batch_size)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (default: distillation.learning_rate)")
    parser.add_argument(
        "--teacher-hidden",
        type=int,
        nargs="+",
        metavar="WIDTH",
        help=f"the teacher MLP's layer widths (default {' '.join(map(str, default_of('teacher_hidden')))})",
    )
    parser.add_argument(
        "--teacher-data",
        default=default_of("teacher_data"),
        help="the teacher's labels: 'disjoint' (the students' labelled examples and --teacher-size more, "
        "never the transfer set's; default), 'labelled' (the students' only) or 'train' (the whole pool: "
        "the transfer set's labels leak through the teacher)",
    )
    parser.add_argument(
        "--teacher-size",
        type=int,
        default=default_of("teacher_size"),
        help="with --teacher-data disjoint: labelled examples only the teacher sees (default %(default)s)",
    )
    parser.add_argument(
        "--teacher",
        metavar="PATH",
        help="load the teacher (safetensors, checkpoint-teacher format) instead of training one",
    )
    parser.add_argument("--save-teacher", metavar="PATH", help="also save the best seed's teacher (safetensors)")
    parser.add_argument("--student", help="student plugin (default: student.plugin)")
    parser.add_argument(
        "--student-param",
        action="append",
        metavar="KEY=VALUE",
        help="a student parameter as a TOML value, e.g. hidden=[16] (repeatable)",
    )
    parser.add_argument("--strategy", help="distillation strategy (default: distillation.strategy)")
    parser.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="a strategy parameter as a TOML value, e.g. temperature=4 (repeatable)",
    )
    parser.add_argument(
        "--tune",
        action=argparse.BooleanOptionalAction,
        default=default_of("tune"),
        help="choose the strategy's unset parameters and the hard-label baseline's label smoothing and weight "
        "decay on the validation split (default); --no-tune: one training each, as given",
    )
    parser.add_argument(
        "--output",
        default="student.safetensors",
        help="where to save the best distilled student (default ./student.safetensors; '' for none)",
    )
    parser.add_argument("--plot", metavar="PATH", help="write a bar chart of the accuracies (PNG)")
    parser.add_argument("--json", action="store_true", help="print only the summary, as one JSON object")
    parser.set_defaults(handler=run_distill)


def main(argv: list[str] | None = None) -> int:
    """``python -m runtime.learn.offline [flags]``: the ``distill`` command without the agentrt CLI."""
    parser = argparse.ArgumentParser(prog="python -m runtime.learn.offline")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["distill", *(sys.argv[1:] if argv is None else argv)])
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
