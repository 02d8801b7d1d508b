"""``agentrt distill``: offline knowledge distillation on a labelled dataset, the classic workflow.

The setting is the one distillation is for: a teacher trained on the labelled training data, and a
small student that may use only a few labels (``--train-size``) but every training *input*, which
the teacher labels (the transfer set of Hinton et al. 2015). Per seed:

1. **Data.** The dataset is split once into stratified training and test splits (``--test-fraction``,
   ``--split-seed``: the same test set for every seed). From the training split, ``--train-size``
   examples are drawn (stratified, per seed): the student's *labelled* examples. The rest of the
   training split is the *transfer set*: the students never see its labels (``--transfer-size``
   caps it; 0 leaves the labelled inputs alone).
2. **Teacher.** A large MLP (``--teacher-hidden``, default 256-256) trained with cross-entropy on
   the labels of the whole training split (``--teacher-data train``), as a teacher trained on all
   the labelled data there is; ``--teacher-data labelled`` restricts it to the students' labelled
   examples. ``--teacher PATH`` loads a teacher instead (``--save-teacher`` writes one; any file of
   the ``checkpoint`` teacher plugin works), the same for every seed.
3. **Distilled student.** The configured student (``[student]``: ``mlp`` with ``hidden = [32]``)
   learns with the strategy (``--strategy``, ``--param key=value``; default ``soft_target`` with
   temperature 4 and alpha 0.9) from the teacher's outputs on the labelled and transfer inputs. The
   strategy's hard labels are the true labels where the student has them, the teacher's argmax
   elsewhere. Student and strategy are built through the plugins, like online distillation.
4. **Baseline.** The same student architecture, from the same initial weights, trained with
   cross-entropy on the labelled examples alone, with the same budget: ``--steps`` optimizer steps
   of the same batch size and learning rate.
5. **Report.** Test accuracy of all three (mean ± std over ``--seeds``), parameter counts, a rich
   table (or one JSON object with ``--json``), an optional bar chart (``--plot``). The distilled
   student with the best test accuracy is saved as safetensors (``--output``); its metadata names
   the student plugin and params, the dataset and split, and its accuracy, so it can be rebuilt
   and checked (``load_student``). Choosing it by test accuracy makes *its* accuracy an optimistic
   estimate; the reported means are not affected.

What to expect on ``digits`` (scikit-learn's 8x8 images; 300 labels, 958 transfer inputs, 539
test images): the distilled student gains 2 to 5 points of test accuracy over the hard-label one on
every seed (3.2 on average over seeds 0-2) and comes within half a point of the teacher, with 35
times fewer parameters. Most of the gain comes from the teacher labelling the transfer set: the
``hard_label`` strategy, which uses only the teacher's argmax there, does as well on this dataset.
Without a transfer set (``--transfer-size 0``) soft targets alone still gain 1.7 points, and there
a high temperature and alpha matter (T = 2, alpha = 0.5 gain 0.2). There is nothing to gain when
the students get every label too (``--train-size 1258``) or when the teacher knows only the
students' labels (``--teacher-data labelled``): a 32-unit MLP then does about as well as the teacher.

Everything is deterministic given the seeds: numpy generators and ``torch.manual_seed`` derive from
the seed, and torch runs with ``distillation.torch_threads`` threads (at most 2).

Adding a dataset: put a loader in ``DATASETS`` that returns ``X`` (float32, N×D, scaled for a
network: roughly unit range; the saved student expects this scaling) and ``y`` (int64 classes 0..K-1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime import extras
from runtime.config import DistillationSettings, Settings
from runtime.errors import ConfigError, DistillError, ExitCode, PluginError

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
    train: np.ndarray
    test: np.ndarray
    classes: int

    @property
    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        return self.X[self.test], self.y[self.test]


def prepare_data(dataset: str, test_fraction: float = 0.3, split_seed: int = 0) -> Data:
    """The dataset and its train/test split, as ``agentrt distill`` uses them."""
    X, y = load_dataset(dataset)
    train, test = train_test_split(y, test_fraction, split_seed)
    return Data(X, y, train, test, int(y.max()) + 1)


# --- settings --------------------------------------------------------------------------------------

TEACHER_DATA = ("train", "labelled")


@dataclass
class OfflineSettings:
    dataset: str = "digits"
    seeds: int = 3
    first_seed: int = 0
    train_size: int = 300
    transfer_size: int | None = None  # None: the whole rest of the training split
    test_fraction: float = 0.3
    split_seed: int = 0
    steps: int = 1500
    teacher_steps: int = 1500
    batch_size: int = 128
    learning_rate: float = 3e-3
    teacher_hidden: list[int] = field(default_factory=lambda: [256, 256])
    teacher_data: str = "train"
    teacher_path: str | None = None
    student: str = "mlp"
    student_params: dict[str, Any] = field(default_factory=lambda: {"hidden": [32]})
    strategy: str = "soft_target"
    strategy_params: dict[str, Any] = field(default_factory=lambda: dict(OFFLINE_STRATEGY_PARAMS["soft_target"]))
    threads: int = 1
    output: str | None = None
    save_teacher: str | None = None


#: Strategy parameters for offline distillation when the configuration file sets none of its own.
#: The online defaults (T = 2, alpha = 0.5) suit a student that keeps receiving labels; offline, the
#: soft targets must carry what the few labels cannot, so they should dominate (alpha 0.9) and be
#: soft enough (T = 4) to show which other classes an input resembles. Measured on digits without a
#: transfer set: T = 2, alpha = 0.5 gain 0.2 points over hard labels, T = 4, alpha = 0.9 gain 1.7.
OFFLINE_STRATEGY_PARAMS: dict[str, dict[str, Any]] = {
    "soft_target": {"temperature": 4.0, "alpha": 0.9},
}


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
    and names the same strategy, else ``OFFLINE_STRATEGY_PARAMS``; ``--param`` overrides either.
    """
    distillation = config.distillation
    strategy = args.strategy or distillation.strategy
    own_params = distillation.params != DistillationSettings().params
    if strategy == distillation.strategy and own_params:
        strategy_params = dict(distillation.params)
    else:
        strategy_params = dict(OFFLINE_STRATEGY_PARAMS.get(strategy, {}))
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
        split_seed=args.split_seed,
        steps=args.steps,
        teacher_steps=args.teacher_steps,
        batch_size=distillation.batch_size if args.batch_size is None else args.batch_size,
        learning_rate=distillation.learning_rate if args.lr is None else args.lr,
        teacher_hidden=list(args.teacher_hidden or OfflineSettings().teacher_hidden),
        teacher_data=args.teacher_data,
        teacher_path=args.teacher,
        student=student,
        student_params=student_params,
        strategy=strategy,
        strategy_params=strategy_params,
        threads=min(distillation.torch_threads, 2),
        output=args.output or None,
        save_teacher=args.save_teacher or None,
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
    if settings.transfer_size is not None and settings.transfer_size < 0:
        raise DistillError(f"--transfer-size must be >= 0, got {settings.transfer_size}")
    if not 0 < settings.test_fraction < 1:
        raise DistillError(f"--test-fraction must be between 0 and 1, got {settings.test_fraction}")
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


def accuracy(module: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    import torch

    module.eval()
    with torch.no_grad():
        predicted = module(torch.from_numpy(X)).argmax(dim=1).numpy()
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
) -> None:
    """Cross-entropy on the true labels of ``examples`` (how the teacher and the hard-label baseline learn)."""
    import torch
    import torch.nn.functional as F

    from runtime.learn.trainer import Optimiser

    X, y = torch.from_numpy(data.X[examples]), torch.from_numpy(data.y[examples])
    _train(
        Optimiser(module, settings.learning_rate),
        lambda i: F.cross_entropy(module(X[i]), y[i]),
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
    _fit_labels(teacher, data, examples, settings, settings.teacher_steps, np.random.default_rng([seed, 1]), advance)
    return teacher


def distil_student(
    settings: OfflineSettings,
    data: Data,
    student: torch.nn.Module,
    strategy: Any,
    component: Component,
    teacher: torch.nn.Module,
    labelled: np.ndarray,
    transfer: np.ndarray,
    seed: int,
    advance: Callable[[int], None],
) -> None:
    """Train ``student`` with ``strategy`` (``component``) on the teacher's outputs for the labelled
    and transfer inputs, with online distillation's optimiser, loss checks and running agreement.

    Hidden features go to the strategy when both networks expose ``forward_features`` (for
    ``feature_hints``); ``agreement`` is the student's running agreement with the teacher (for
    ``adaptive``), measured on each minibatch before the step, as online on fresh labels.
    """
    import torch

    from runtime.learn.evaluation import agreement_and_loss
    from runtime.learn.trainer import Optimiser, forward_with_features, running_agreement, strategy_loss
    from runtime.plugin.interfaces import StrategyInputs

    inputs = np.concatenate([labelled, transfer])
    X = torch.from_numpy(data.X[inputs])
    teacher.eval()
    with torch.no_grad():
        teacher_outputs, teacher_features = forward_with_features(teacher, X)
    hard = teacher_outputs.argmax(dim=1)
    hard[: len(labelled)] = torch.from_numpy(data.y[labelled])  # true labels where the student has them
    agreement: list[float | None] = [None]

    def loss_of(indices: np.ndarray) -> torch.Tensor:
        outputs, features = forward_with_features(student, X[indices])
        agree, _ = agreement_and_loss(outputs.detach().numpy(), teacher_outputs[indices].numpy(), discrete=True)
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
) -> None:
    """The baseline: cross-entropy on the labelled examples alone, same steps, batch size and rate."""
    _fit_labels(student, data, labelled, settings, settings.steps, np.random.default_rng([seed, 3]), advance)


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
class SeedResult:
    seed: int
    teacher_accuracy: float
    distilled_accuracy: float
    hard_label_accuracy: float
    student: Any = None  # the distilled student (torch module), kept to save the best
    teacher: Any = None


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
    data = prepare_data(settings.dataset, settings.test_fraction, settings.split_seed)
    if not data.classes <= settings.train_size <= len(data.train):
        raise DistillError(
            f"--train-size {settings.train_size}: expected between the {data.classes} classes "
            f"and the {len(data.train)} training examples of {settings.dataset!r}"
        )
    observation_space, action_space = spaces_for(data)

    def make_student() -> torch.nn.Module:
        return plugins.build(
            "student", settings.student, dict(settings.student_params), observation_space, action_space
        )

    def make_strategy() -> Any:
        return plugins.build("strategy", settings.strategy, dict(settings.strategy_params))

    warnings: list[str] = []
    try:
        make_student(), make_strategy()  # a bad name or parameter fails now, before any training
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
        rng = np.random.default_rng([seed, 0])
        labelled = data.train[stratified_sample(data.y[data.train], settings.train_size, rng)]
        rest = rng.permutation(np.setdiff1d(data.train, labelled))
        transfer = np.sort(rest[: settings.transfer_size] if settings.transfer_size is not None else rest)
        if loaded is None:
            describe(f"{prefix}: teacher")
            examples = data.train if settings.teacher_data == "train" else labelled
            teacher = train_teacher(settings, plugins, data, examples, seed, advance)
        else:
            teacher = loaded
        describe(f"{prefix}: distilled student")
        torch.manual_seed(seed)
        student = make_student()
        initial = {name: tensor.clone() for name, tensor in student.state_dict().items()}
        distil_student(
            settings,
            data,
            student,
            make_strategy(),
            plugins.get("strategy", settings.strategy),
            teacher,
            labelled,
            transfer,
            seed,
            advance,
        )
        describe(f"{prefix}: hard-label student")
        baseline = make_student()
        baseline.load_state_dict(initial)  # the same starting point: a paired comparison
        train_hard_label(settings, data, baseline, labelled, seed, advance)
        X_test, y_test = data.test_set
        results.append(
            SeedResult(
                seed,
                accuracy(teacher, X_test, y_test),
                accuracy(student, X_test, y_test),
                accuracy(baseline, X_test, y_test),
                student,
                teacher,
            )
        )
    best = max(results, key=lambda r: r.distilled_accuracy)  # the first of equals: the lowest seed
    summary = _summary(settings, data, results, best, len(transfer))
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
) -> torch.nn.Module:
    """The ``--teacher`` file, through the ``checkpoint`` teacher plugin (which checks its shapes)."""
    from runtime.errors import PluginError
    from runtime.learn.checkpoints import load_safetensors

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
    return teacher.module


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _summary(
    settings: OfflineSettings, data: Data, results: list[SeedResult], best: SeedResult, transfer_size: int
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "dataset": settings.dataset,
        "seeds": [r.seed for r in results],
        "train_size": settings.train_size,
        "transfer_size": transfer_size,
        "test_size": len(data.test),
        "steps": settings.steps,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "teacher": (
            {"path": settings.teacher_path}
            if settings.teacher_path
            else {"hidden": settings.teacher_hidden, "data": settings.teacher_data, "steps": settings.teacher_steps}
        ),
        "student": {"plugin": settings.student, "params": settings.student_params},
        "strategy": {"name": settings.strategy, "params": settings.strategy_params},
    }
    for name in ("teacher", "distilled", "hard_label"):
        summary[f"{name}_accuracy"], summary[f"{name}_accuracy_std"] = _mean_std(
            [getattr(r, f"{name}_accuracy") for r in results]
        )
    summary["improvement"] = summary["distilled_accuracy"] - summary["hard_label_accuracy"]
    summary["per_seed"] = [
        {
            "seed": r.seed,
            "teacher_accuracy": r.teacher_accuracy,
            "distilled_accuracy": r.distilled_accuracy,
            "hard_label_accuracy": r.hard_label_accuracy,
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
        "strategy_params": json.dumps(settings.strategy_params),
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
        f"{summary['transfer_size']} transfer inputs, {summary['test_size']} test",
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
    strategy = summary["strategy"]
    params = ", ".join(f"{k}={v}" for k, v in strategy["params"].items())
    console.print(
        f"strategy {strategy['name']}{f' ({params})' if params else ''}, {summary['steps']:,} steps per "
        f"student: distillation {'gains' if summary['improvement'] >= 0 else 'loses'} "
        f"{abs(summary['improvement']) * 100:.1f} points over hard labels; {summary['duration_s']:.1f} s in all"
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
        per_seed = (0 if settings.teacher_path else settings.teacher_steps) + 2 * settings.steps
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
    defaults = OfflineSettings()
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
    parser.add_argument("--dataset", default=defaults.dataset, help=f"one of: {', '.join(sorted(DATASETS))}")
    parser.add_argument("--seeds", type=int, default=defaults.seeds, help=f"seeds to run (default {defaults.seeds})")
    parser.add_argument("--first-seed", type=int, help="the first seed (default: distillation.seed)")
    parser.add_argument(
        "--train-size",
        type=int,
        default=defaults.train_size,
        help=f"labelled training examples for the students (default {defaults.train_size})",
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
        default=defaults.test_fraction,
        help=f"share of the dataset held out for testing (default {defaults.test_fraction})",
    )
    parser.add_argument("--split-seed", type=int, default=defaults.split_seed, help="seed of the train/test split")
    parser.add_argument(
        "--steps", type=int, default=defaults.steps, help=f"optimizer steps for each student (default {defaults.steps})"
    )
    parser.add_argument(
        "--teacher-steps",
        type=int,
        default=defaults.teacher_steps,
        help=f"optimizer steps for the teacher (default {defaults.teacher_steps})",
    )
    parser.add_argument("--batch-size", type=int, help="minibatch size (default: distillation.batch_size)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (default: distillation.learning_rate)")
    parser.add_argument(
        "--teacher-hidden",
        type=int,
        nargs="+",
        metavar="WIDTH",
        help=f"the teacher MLP's layer widths (default {' '.join(map(str, defaults.teacher_hidden))})",
    )
    parser.add_argument(
        "--teacher-data",
        default=defaults.teacher_data,
        help="the teacher's labels: 'train' (the whole training split, default) or 'labelled' "
        "(only the students' labelled examples)",
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
