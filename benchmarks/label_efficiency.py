#!/usr/bin/env python3
"""Label efficiency of the teacher query policies: teacher labels needed to reach 95% of the teacher.

    .venv/bin/python benchmarks/label_efficiency.py --env acrobot --workers 2   # the reported run: 10 seeds
    .venv/bin/python benchmarks/label_efficiency.py --quick --env cartpole     # 1 seed, halved caps, ~30 s
    .venv/bin/python benchmarks/label_efficiency.py --tune --env acrobot       # choose the settings (the tuned .toml)
    .venv/bin/python benchmarks/label_efficiency.py --methods dagger,budget --set budget.per_second=2
    .venv/bin/python benchmarks/label_efficiency.py --daemon --env acrobot --methods dagger_uniform --seeds 1
    .venv/bin/python benchmarks/label_efficiency.py --merge a.json b.json --out all.json  # runs split by --methods
    .venv/bin/python benchmarks/label_efficiency.py --tune --env acrobot --runs runs/  # keep runs; resume when stopped

Decided in advance
------------------
Every method with a setting has it chosen by ``--tune`` on the tuning seeds ``TUNING_SEEDS``
(100-102), disjoint from the reported seeds (0..9), by one procedure: each tunable method tries
the same three label rates ``RATES`` (2%, 5% and 20% of the environment steps, in each policy's own
parameter, see ``TUNABLE``), every candidate on the same seeds, and the candidate kept is the one
that reached the target on the most tuning seeds, then with the fewest mean labels, a seed that did
not reach counted at the cap; ties go to the lower rate. The *policy chosen in advance* is, by the
same rule, the best tuned query policy other than the baselines. The choices are written into
``label_efficiency_tuned.toml`` (read as ``TUNED``; with the date and command) and committed before
the reported run, which reads them from there.

Methods: ``dagger`` (policy ``always``: the student acts, every visited state is labelled),
``dagger_uniform`` (policy ``share``: the student acts, a uniform random share of visited states is
labelled, i.e. DAgger thinned uniformly, at its tuned rate), ``bc`` (``share`` with
``teacher_acts``: the teacher acts on every step, a uniform share of its states is labelled:
behaviour cloning on teacher rollouts spread over episodes), and the query policies ``budget``,
``uncertainty``, ``novelty``, ``cascade`` and ``disagreement`` (the last needs an ensemble student,
``forward_members``; with an ``mlp``/``cnn`` student it is skipped with a note). On the
discrete tasks the policy chosen in advance also runs with the other strategies: ``soft_target``
at T = 2 is the task's configuration, ``+soft_calibrated`` softens at the teacher's calibrated
temperature (where the task has one, ``CALIBRATED``), ``+hard_label`` uses hard labels.

Tasks (``TASKS``): CartPole-v1 (runtime defaults), Pendulum-v1 (examples/pendulum.toml), Acrobot-v1
(examples/acrobot.toml, an RL-trained teacher), MountainCar from pixels
(examples/mountaincar_pixels.toml: the student sees two stacked 24 x 40 images through the
configured perception chain, the teacher the state), multi-task (examples/multitask.toml: one
student taught CartPole and Acrobot by their two teachers, the tasks in turn, one per episode:
``agentrt/MultiTask-v0``) and InvertedDoublePendulum-v5 (examples/inverted_double_pendulum.toml,
MuJoCo: the ``mujoco`` extra); ``cartpole_ensemble`` and ``pendulum_ensemble`` are CartPole and
Pendulum with an ensemble of five of their students (``ENSEMBLE_TASKS``), the student
``disagreement`` needs (its ``vote`` on CartPole's actions, the members' spread on Pendulum's) and
on which ``uncertainty`` has a score for a box action, every method running on that same student.

What is simulated
-----------------
The runtime's online loop itself: ``runtime.learn.loop.Decider`` and ``Learner``, the code the
decision and distillation roles drive, here driven in one process without sockets, one environment
step at a time, built from the same configuration (perception chain, query policy, student,
strategy and teacher plugins, all through the plugin manager). What the roles add around the core
(sockets, batching across peers, timeouts, files) changes when things happen, not what is learned
from which label. Per environment step:

1. The observation goes through the perception chain (one stream, reset at each episode start, as
   perception does), then ``Decider.decide``: the *serving* student (the last promoted version;
   untrained until the first promotion) computes its outputs; the query policy returns a
   ``QueryDecision``; where ``teacher_acts`` (or the student's output is not finite) the teacher
   answers and acts, else the student acts.
2. A label goes to ``Learner.add_labels``: an acting teacher's answer is the label, else the
   teacher is asked, as the distiller does (a ``heldout_share`` of labels goes to the held-out
   set, as in the runtime: those labels are paid for too).
3. ``Learner.tick`` trains as its pacing allows. **Training schedule, the same for every method**
   (``Schedule``, pacing ``PerLabel``): every label buys 16 training steps (one minibatch of
   ``distillation.batch_size`` each), paid out as labels arrive once ``min_samples`` are in. Per
   label, not per environment step: this benchmark measures *labels*, so every method gets the
   same training per label and none is starved of compute (docs/distillation.md has the
   measurements). ``--train-per env_step --train-steps N`` runs the other schedule (pacing
   ``PerTick``). ``distillation.min_samples`` is lowered to 16 for every method (``MIN_SAMPLES``).
4. Every ``--publish-every`` training steps the learner judges a candidate at the promotion gate; a
   promoted one is served by the decider from the next step.

The core's clock is *environment time* (steps times the task's control period): the budget
policy's token bucket reads it from ``QueryContext.now``, so runs are deterministic.

``--daemon`` runs the same methods against a real, private daemon instead (``run_daemon``: a
``ChildDaemon`` and one gym peer through ``runtime.peer``, held so that every answer buys the
schedule's training).

What is measured
----------------
*Labels* are the observations the teacher labelled for training (the cost). *Teacher-acted steps*
are the steps the teacher acted on; for every policy here but ``bc`` those are labelled too, so
labels are also all the teacher's answers; ``bc``'s teacher acts on every step and only a share is
labelled (its rollouts are counted as free demonstrations: a reading that favours it). The student
is evaluated **acting alone** (the trainer's current weights, no teacher) on ``eval_episodes``
fixed-seed episodes (seeds 10000..), whenever the label count crosses a point of a geometric grid
(16, then +10% each), and every 2000 environment steps. Its score is normalised between a uniformly
random policy and the teacher on the same episodes::

    score = (R_student - R_random) / (R_teacher - R_random)

Per method and seed: *labels to 95%* (the label count at the first evaluation with
``score >= 0.95``; the run then stops; a run that hits ``max_labels`` or ``max_env_steps`` is "not reached",
never a number), *environment steps* and *teacher-acted steps* until the run ended (target or cap),
*failures while learning* (episodes that ended badly while it learned, per task:
``EnvSetup.failure``, CartPole a fall before the time limit, Acrobot and MountainCar an episode cut
by the time limit without reaching the goal, multi-task each by its task's rule, Pendulum none) and
the *area under the learning curve* (``auc``: the mean over label budgets 0..``max_labels`` of the
score clipped to [0, 1], the score at a budget being the last evaluation at or before it, 0 before
the first; a run that stopped keeps its last score up to the cap). Each is reported as mean ± std
over seeds with reached n/seeds. The verdict compares the policy chosen in advance with
``dagger_uniform``: the ratio of mean labels with a 90% paired bootstrap interval over seeds (a
seed that did not reach counts at the cap, which favours the method that failed); likewise soft
targets against hard labels.

Output: a rich table per task (stdout), progress (stderr), ``--plot PATH`` (score against labels)
and, as the LAST line of stdout, one JSON object with every result (``--out PATH`` also writes it).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import platform
import statistics
import sys
import time
import tomllib
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from runtime import config as config_module  # noqa: E402
from runtime import extras  # noqa: E402
from runtime.config import Settings  # noqa: E402
from runtime.errors import ConfigError  # noqa: E402
from runtime.files import atomic_write  # noqa: E402
from runtime.wire.spaces import actions_from_outputs  # noqa: E402

TARGET = 0.95
DEFAULT_SEEDS = 10
EVAL_SEED = 10_000
EVAL_EVERY_ENV_STEPS = 2000
GRID_START, GRID_FACTOR = 16, 1.1
MIN_SAMPLES = 16  # distillation.min_samples for every method (see env_setups)
LATENCY_REPEATS = 200
BOOTSTRAP_RESAMPLES = 2000
# Query policies that take a ``seed`` parameter: each run seeds them with its own seed.
SEEDED_POLICIES = {"cascade", "share", "uncertainty", "disagreement", "novelty"}


class UnknownMethod(ConfigError, ValueError):
    """A method named on the command line (``--methods``, ``--set``) that the task does not have;
    the message lists the ones it has."""


@dataclass(frozen=True)
class Method:
    name: str
    policy: str
    params: dict[str, Any]
    strategy: str | None = None  # a distillation strategy instead of the task's, with
    strategy_params: dict[str, Any] | None = None  # these parameters


@dataclass(frozen=True)
class Schedule:
    """How much the student trains, the same for every method: ``steps`` training steps (one
    minibatch each) per ``per`` ("label": per teacher label, counted from the first; "env_step":
    per environment step once ready, with the distiller's rest rule), and a promotion-gate check
    every ``publish_every`` training steps."""

    per: str = "label"
    steps: int = 16
    publish_every: int = 50

    def describe(self) -> str:
        return f"{self.steps} training steps per {self.per.replace('_', ' ')}, gate every {self.publish_every} steps"


@dataclass(frozen=True)
class EnvSetup:
    key: str
    env_id: str
    config: dict[str, Any]  # the runtime configuration every method starts from
    teacher: str  # which teacher, in words
    max_labels: int  # caps per run: labels,
    max_env_steps: int  # and environment steps
    control_period_s: float  # simulated seconds per env step (the budget policy's clock)
    # Which episode ends count as failures: "terminated", "truncated" or None; on a multi-task env,
    # that rule per task (the env's info["task"]).
    failure: str | dict[str, str] | None
    calibrated: dict[str, Any] | None  # soft_target parameters at the teacher's calibrated temperature
    methods: dict[str, Method] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """The task's name in the tables and the JSON's ``envs``: its env, and its student if
        another task shares the env."""
        return f"{self.env_id} (ensemble student)" if self.key.endswith("_ensemble") else self.env_id


# --- the methods and how they are tuned ----------------------------------------------------------

#: Label rates every tunable method tries (share of environment steps), one candidate each.
RATES = (0.02, 0.05, 0.2)
TUNING_SEEDS = (100, 101, 102)
#: Tunable method -> (query policy, its parameters at a label rate on a task).
TUNABLE: dict[str, tuple[str, Callable[[float, EnvSetup], dict[str, Any]]]] = {
    "dagger_uniform": ("share", lambda rate, setup: {"share": rate}),
    "bc": ("share", lambda rate, setup: {"share": rate, "teacher_acts": True}),
    # Evenly spaced: one label per 1/rate steps of simulated time.
    "budget": ("budget", lambda rate, setup: {"per_second": round(rate / setup.control_period_s, 6)}),
    # A box student's uncertainty has no score: the policy then labels a random fallback_share.
    "uncertainty": ("uncertainty", lambda rate, setup: {"target_rate": rate, "fallback_share": rate}),
    "novelty": ("novelty", lambda rate, setup: {"target_rate": rate}),
    "disagreement": ("disagreement", lambda rate, setup: {"target_rate": rate}),
    "cascade": ("cascade", lambda rate, setup: {"label_share": rate}),
}
BASELINES = ("dagger", "dagger_uniform", "bc")
#: The query policies the policy chosen in advance is picked from.
QUERY_POLICIES = tuple(name for name in TUNABLE if name not in BASELINES)

# The label rate of every tunable method per task, and the query policy chosen in advance: the
# output of ``--tune`` on TUNING_SEEDS (docs/distillation.md has the sweep), written into
# TUNED_PATH, each with the date and command, and committed before the task's reported run on seeds
# 0..9, which reads it.
TUNED_PATH = Path(__file__).with_name("label_efficiency_tuned.toml")
TUNED: dict[str, dict[str, Any]] = tomllib.loads(TUNED_PATH.read_text())

# The soft_target parameters of the "+soft_calibrated" variant per task: CartPole's teacher carries
# its calibrated temperature in its file. Acrobot's and MountainCar's are given here as the reported
# runs had them, fitted by ``python -m runtime.learn.recipes.calibrate
# plugins/assets/<task>_teacher.safetensors --fit-episodes 3`` (docs/distillation.md "Calibrated
# teachers"); their files hold them since (0.269, 1.087), but the pixel task's `view` teacher does
# not pass its inner teacher's on.
CALIBRATED = {
    "cartpole": {"calibrated": True},
    "acrobot": {"temperature": 0.27},
    "mountaincar_pixels": {"temperature": 1.09},
}


def tuned_method(name: str, rate: float, setup: EnvSetup) -> Method:
    policy, params = TUNABLE[name]
    return Method(name, policy, params(rate, setup))


def task_methods(setup: EnvSetup) -> dict[str, Method]:
    """Every method at its tuned setting (TUNED), the strategy variants of the policy chosen in
    advance included; a task not tuned yet has only ``dagger``."""
    methods = {"dagger": Method("dagger", "always", {})}
    tuned = TUNED.get(setup.key)
    if tuned is None:
        return methods
    # A method without a rate could not run when the task was tuned (disagreement without an ensemble).
    methods |= {name: tuned_method(name, rate, setup) for name, rate in tuned["rates"].items()}
    best = methods[tuned["best"]]
    strategy = setup.config["distillation"]["strategy"]
    if strategy == "soft_target":
        variants = {"hard_label": ("hard_label", {})}
        if setup.calibrated is not None:
            variants["soft_calibrated"] = (strategy, {**setup.config["distillation"]["params"], **setup.calibrated})
        for variant, (name, params) in variants.items():
            methods[f"{best.name}+{variant}"] = Method(f"{best.name}+{variant}", best.policy, best.params, name, params)
    return methods


#: Tasks that also run with an ensemble of their student (key "<task>_ensemble"): the one kind of
#: student ``disagreement`` can score, and ``uncertainty`` on a box action. Every method runs on it,
#: so the comparison within such a task is between policies on the same student.
ENSEMBLE_TASKS = ("cartpole", "pendulum")
ENSEMBLE_MEMBERS = 5


def ensemble_of(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its student replaced by an ensemble of ENSEMBLE_MEMBERS of that student."""
    student = config["student"]
    params = {"members": ENSEMBLE_MEMBERS, "member": student["plugin"], "member_params": dict(student["params"])}
    return {**copy.deepcopy(config), "student": {"plugin": "ensemble", "params": params}}


def env_setups(quick: bool = False) -> dict[str, EnvSetup]:
    """The tasks: CartPole with the runtime's default configuration, the others with their
    example files (Pendulum: its teacher checkpoint, else the scripted expert it was trained from)."""
    from plugins.teachers import BUILTIN_CHECKPOINTS

    cartpole = config_module.defaults()
    examples = {
        key: config_module.load(REPO / "examples" / f"{key}.toml", environ={})
        for key in ("pendulum", "acrobot", "mountaincar_pixels", "multitask", "inverted_double_pendulum")
    }
    pendulum = examples["pendulum"]
    pendulum_teacher = "checkpoint builtin:pendulum (3-256-256-1 MLP)"
    if not BUILTIN_CHECKPOINTS["pendulum"].exists():  # not built yet: the expert it imitates
        pendulum["teacher"] = {
            **pendulum["teacher"],
            "plugin": "scripted",
            "params": {"callable": "runtime.learn.recipes.pendulum:expert_action"},
        }
        pendulum_teacher = "scripted expert (runtime.learn.recipes.pendulum:expert_action)"
    for config in (cartpole, *examples.values()):
        # The runtime's 64 (the example's 256 on Pendulum) put a floor under every method's count
        # that has nothing to do with the policy: a benchmark of labels lowers it.
        config["distillation"]["min_samples"] = MIN_SAMPLES
    scale = 0.5 if quick else 1.0
    tasks = [
        # key, env, config, teacher, max labels, max env steps, control period, failure
        ("cartpole", "CartPole-v1", cartpole, "checkpoint builtin:cartpole (4-256-256-2 MLP)", 2000, 40_000, 0.02,
         "terminated"),
        ("pendulum", "Pendulum-v1", pendulum, pendulum_teacher, 4000, 60_000, 0.05, None),
        ("acrobot", "Acrobot-v1", examples["acrobot"], "checkpoint builtin:acrobot (6-128-128-3 double-DQN)", 1000,
         30_000, 0.2, "truncated"),
        # No control period of its own: 0.05 s is nominal (the budget rate is per step anyway).
        ("mountaincar_pixels", "runtime.peer.envs:agentrt/MountainCarPixels-v0", examples["mountaincar_pixels"],
         "view (state) of checkpoint builtin:mountaincar (2-64-64-3 MLP); student: cnn on 2 x 24 x 40 pixels",
         600, 20_000, 0.05, "truncated"),
        # The two tasks in turn, one per episode (half the evaluation episodes each); its score
        # normalises the mean return over both, in which the tasks weigh about equally (CartPole's
        # teacher-random gap ~480, Acrobot's ~420). No control period of its own either.
        ("multitask", "runtime.peer.envs:agentrt/MultiTask-v0", examples["multitask"],
         "tasks: view of builtin:cartpole (4-256-256-2 MLP) and of builtin:acrobot (6-128-128-3 double-DQN)", 2000,
         40_000, 0.02, {"CartPole-v1": "terminated", "Acrobot-v1": "truncated"}),
        # MuJoCo (the `mujoco` extra): episodes of up to 1,000 steps; a failure is a fall before that.
        ("inverted_double_pendulum", "InvertedDoublePendulum-v5", examples["inverted_double_pendulum"],
         "checkpoint builtin:inverted_double_pendulum (9-256-256-1 MLP)", 4000, 60_000, 0.05, "terminated"),
    ]  # fmt: skip
    tasks += [
        (f"{key}_ensemble", env_id, ensemble_of(config), f"{teacher}; student: ensemble of {ENSEMBLE_MEMBERS}", *rest)
        for key, env_id, config, teacher, *rest in tasks
        if key in ENSEMBLE_TASKS
    ]
    setups = {}
    for key, env_id, config, teacher, labels, steps, period, failure in tasks:
        setup = EnvSetup(
            key,
            env_id,
            config,
            teacher,
            int(labels * scale),
            int(steps * scale),
            period,
            failure,
            CALIBRATED.get(key.removesuffix("_ensemble")),
        )
        setups[key] = dataclasses.replace(setup, methods=task_methods(setup))
    return setups


# --- acting in an env ---------------------------------------------------------------------------

#: Features of env ``index``'s observation (``new_episode`` at a reset): perception for a student.
Perceive = Callable[[int, np.ndarray, bool], np.ndarray]


def run_episodes(
    envs: list, seeds: list[int], act: Callable[[np.ndarray], np.ndarray], perceive: Perceive | None = None
) -> list[float]:
    """Returns of one episode per env, reset with ``seeds``; ``act`` maps a batch of observations
    (through ``perceive`` if given) to a batch of env actions (the envs step together, so a
    student's forwards are batched)."""

    def features(index: int, obs: np.ndarray, new_episode: bool) -> np.ndarray:
        return obs if perceive is None else perceive(index, obs, new_episode)

    inputs = [features(i, env.reset(seed=seed)[0], True) for i, (env, seed) in enumerate(zip(envs, seeds, strict=True))]
    returns = [0.0] * len(envs)
    alive = list(range(len(envs)))
    while alive:
        actions = act(np.stack([inputs[i] for i in alive]))
        still = []
        for row, index in enumerate(alive):
            obs, reward, terminated, truncated, _ = envs[index].step(actions[row])
            returns[index] += float(reward)
            if not (terminated or truncated):
                inputs[index] = features(index, obs, False)
                still.append(index)
        alive = still
    return returns


def output_actor(forward: Callable[[np.ndarray], np.ndarray], action_space, width: int) -> Callable:
    """Env actions from a model's outputs, the way decision turns outputs into actions."""

    def act(observations: np.ndarray) -> np.ndarray:
        outputs = np.asarray(forward(observations.astype(np.float32, copy=False)))[:, :width]
        return actions_from_outputs(outputs, action_space)

    return act


def random_actor(action_space, seed: int) -> Callable:
    rng = np.random.default_rng(seed)

    def act(observations: np.ndarray) -> np.ndarray:
        if hasattr(action_space, "n"):
            return rng.integers(0, action_space.n, size=len(observations))
        return rng.uniform(action_space.low, action_space.high, (len(observations),) + action_space.shape).astype(
            action_space.dtype
        )

    return act


def latency_us(forward: Callable[[np.ndarray], Any], observations: np.ndarray) -> float:
    """Median µs of one single-observation forward (as runtime.demo.bare_latency_us measures)."""
    timings = []
    for index in range(LATENCY_REPEATS):
        row = observations[index % len(observations)][None]
        started = time.perf_counter()
        forward(row)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


def evaluation_grid(max_labels: int) -> list[int]:
    """Label counts at which the student is evaluated: 16, then about +10% each."""
    points, value = [], float(GRID_START)
    while value <= max_labels:
        if not points or round(value) > points[-1]:
            points.append(round(value))
        value *= GRID_FACTOR
    return points + ([max_labels] if points[-1] != max_labels else [])


# --- one environment's fixed context --------------------------------------------------------------


class Bench:
    """What every run on one env shares: plugins, spaces, the teacher, the eval episodes and the
    random and teacher reference returns."""

    def __init__(self, setup: EnvSetup, eval_episodes: int) -> None:
        import gymnasium
        import torch

        import runtime.peer.envs  # noqa: F401  (registers the agentrt/ environments)
        from runtime.learn.models import build_teacher, teacher_temperature
        from runtime.plugin import pluginmanager
        from runtime.wire.spaces import agent_spaces, output_size

        torch.set_num_threads(1)
        self.torch = torch
        self.setup = setup
        self.gymnasium = gymnasium
        config = copy.deepcopy(setup.config)
        config["agent"]["env"] = setup.env_id
        self.config = config
        settings = Settings.of(config)
        self.plugins = pluginmanager.load(settings.plugins.table())
        self.observation_space, self.action_space = agent_spaces(settings.agent.table())
        self.width = output_size(self.action_space)
        self.teacher = build_teacher(self.plugins, settings, self.observation_space, self.action_space)
        self.teacher_temperature = teacher_temperature(self.teacher)
        self.eval_seeds = [EVAL_SEED + i for i in range(eval_episodes)]
        self.eval_envs = [gymnasium.make(setup.env_id) for _ in self.eval_seeds]
        self.teacher_returns = run_episodes(
            self.eval_envs, self.eval_seeds, output_actor(self.teacher.label, self.action_space, self.width)
        )
        self.random_returns = run_episodes(self.eval_envs, self.eval_seeds, random_actor(self.action_space, EVAL_SEED))
        self.teacher_return = float(np.mean(self.teacher_returns))
        self.random_return = float(np.mean(self.random_returns))

    def perception(self) -> Callable[[np.ndarray, bytes, bool], np.ndarray]:
        """A fresh perception chain (the configured transforms, as perception runs them): raw
        observation, stream, new episode -> the student's features."""
        from runtime.learn.models import perception_chain

        chain = perception_chain(self.plugins, Settings.of(self.config), self.observation_space)

        def perceive(obs: np.ndarray, stream: bytes, new_episode: bool) -> np.ndarray:
            if new_episode:
                chain.reset(stream)
            return chain(np.asarray(obs, dtype=np.float32), stream)

        return perceive

    def normalised(self, returns: list[float]) -> float:
        return (float(np.mean(returns)) - self.random_return) / (self.teacher_return - self.random_return)

    def threshold_return(self) -> float:
        return self.random_return + TARGET * (self.teacher_return - self.random_return)

    def evaluate(self, student) -> float:
        """The normalised score of ``student`` acting alone on the fixed evaluation episodes."""
        torch = self.torch
        perceive = self.perception()

        def forward(features: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return student(torch.from_numpy(features)).numpy()

        return self.normalised(
            run_episodes(
                self.eval_envs,
                self.eval_seeds,
                output_actor(forward, self.action_space, self.width),
                lambda index, obs, new: perceive(obs, b"eval-%d" % index, new),
            )
        )

    def method_config(self, method: Method, seed: int, schedule: Schedule = Schedule()) -> dict[str, Any]:
        config = copy.deepcopy(self.config)
        params = dict(method.params)
        if method.policy in SEEDED_POLICIES:
            params.setdefault("seed", seed)
        config["query"] = {"policy": method.policy, "params": params}
        if method.strategy is not None:
            config["distillation"]["strategy"] = method.strategy
            config["distillation"]["params"] = dict(method.strategy_params or {})
        config["distillation"]["seed"] = seed
        # The gate is paced by training steps alone (the schedule's), not by publish_interval_s.
        config["distillation"]["steps_per_publish"] = schedule.publish_every
        config["distillation"]["publish_interval_s"] = 0.0
        return config

    def ensemble_student(self) -> bool:
        from runtime.learn.models import build_student
        from runtime.plugin.interfaces import ForwardMembers

        return isinstance(
            build_student(self.plugins, Settings.of(self.config), self.observation_space, self.action_space),
            ForwardMembers,
        )

    def close(self) -> None:
        for env in self.eval_envs:
            env.close()


# --- one run --------------------------------------------------------------------------------------


@dataclass
class Run:
    method: str
    seed: int
    labels_to_target: int | None = None
    env_steps_to_target: int | None = None
    labels: int = 0  # observations the teacher labelled for training: the cost
    answers: int = 0  # the teacher's model calls: labels and teacher-acted steps
    teacher_acted: int = 0
    env_steps: int = 0
    train_steps: int | None = 0
    episodes: int = 0
    failures: int | None = 0  # episodes that ended badly while learning (EnvSetup.failure)
    promoted: int = 0
    rejected: int = 0
    curve: list[tuple[int, float]] = field(default_factory=list)  # (labels, normalised score)
    student_share: float = 0.0
    student_latency_us: float = 0.0
    teacher_latency_us: float = 0.0
    seconds: float = 0.0


class SimulatedClock:
    """Environment time: ``control_period_s`` per step. The core's clock in-process, so the budget
    policy's token bucket and the promotion gate run on simulated seconds and runs are deterministic."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def failed(setup: EnvSetup, terminated: bool, truncated: bool, info: dict[str, Any]) -> bool:
    """Whether an episode that just ended counts as a failure on this task (EnvSetup.failure)."""
    rule = setup.failure.get(info["task"]) if isinstance(setup.failure, dict) else setup.failure
    if rule == "terminated":
        return terminated and not truncated
    if rule == "truncated":
        return truncated and not terminated
    return False


def failure_text(failure: str | dict[str, str] | None) -> str:
    if isinstance(failure, dict):
        return ", ".join(f"{task} {rule}" for task, rule in failure.items())
    return failure or "none"


def simulate(
    bench: Bench,
    method: Method,
    seed: int,
    schedule: Schedule = Schedule(),
    on_step: Callable[[Run], None] | None = None,
) -> Run:
    """One online-distillation run of ``method`` on ``bench``'s env, in-process: the runtime's
    ``Decider`` and ``Learner`` (runtime/learn/loop.py) driven one environment step at a time."""
    from runtime.learn.loop import Decider, Learner, PerLabel, PerTick

    torch = bench.torch
    started = time.perf_counter()
    setup = bench.setup
    config = bench.method_config(method, seed, schedule)
    run = Run(method.name, seed)
    clock = SimulatedClock()
    decider = Decider(bench.plugins, Settings.of(config), bench.observation_space, bench.action_space, clock)
    pacing = PerLabel(schedule.steps) if schedule.per == "label" else PerTick(schedule.steps)
    learner = Learner(bench.plugins, Settings.of(config), bench.observation_space, bench.action_space, clock, pacing)
    learner.trainer.teacher_temperature = bench.teacher_temperature
    perceive = bench.perception()
    grid = iter(evaluation_grid(setup.max_labels))
    next_eval = next(grid)
    next_eval_steps = EVAL_EVERY_ENV_STEPS
    decided_by_student: deque[bool] = deque(maxlen=1000)
    recent: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=256)  # (features, observation)
    env = bench.gymnasium.make(setup.env_id)
    obs, _ = env.reset(seed=seed * 100_000)
    new_episode = True

    def teacher(observations: np.ndarray) -> np.ndarray:
        run.answers += len(observations)
        return np.asarray(bench.teacher.label(observations), dtype=np.float32)

    while True:
        features = perceive(obs, b"learn", new_episode)[None]
        recent.append((features[0], obs))
        decisions = decider.decide(features, obs[None], ["auto"], teacher)
        if decisions.label[0]:
            # As the distiller does: an acting teacher's answer is the label, else the teacher is asked.
            answer = decisions.teacher_outputs[0]
            learner.add_labels(features, teacher(obs[None]) if answer is None else answer[None])
            run.labels += 1
        by_student = decisions.decided_by[0] == "student"
        run.teacher_acted += not by_student
        decided_by_student.append(by_student)
        obs, _, terminated, truncated, info = env.step(decisions.actions[0])
        run.env_steps += 1
        clock.now += setup.control_period_s
        new_episode = terminated or truncated
        if new_episode:
            run.episodes += 1
            run.failures = (run.failures or 0) + failed(setup, terminated, truncated, info)
            obs, _ = env.reset(seed=seed * 100_000 + run.episodes)
        progress = learner.tick()
        if progress.failures:
            raise progress.failures[0]
        run.train_steps = (run.train_steps or 0) + progress.steps
        for candidate in progress.candidates:
            if candidate.promoted:
                decider.serve(candidate.version, candidate.state)
                run.promoted += 1
            else:
                run.rejected += 1
        if run.labels >= next_eval or run.env_steps >= next_eval_steps:
            while run.labels >= next_eval:
                next_eval = next(grid, math.inf)
            next_eval_steps = run.env_steps + EVAL_EVERY_ENV_STEPS
            score = bench.evaluate(learner.student)
            run.curve.append((run.labels, score))
            if score >= TARGET:
                run.labels_to_target, run.env_steps_to_target = run.labels, run.env_steps
                break
        if on_step is not None and run.env_steps % 200 == 0:
            on_step(run)
        if run.labels >= setup.max_labels or run.env_steps >= setup.max_env_steps:
            if not run.curve or run.curve[-1][0] != run.labels:
                run.curve.append((run.labels, bench.evaluate(learner.student)))
            break
    env.close()
    run.student_share = float(np.mean(decided_by_student))
    visited_features = np.stack([features for features, _ in recent]).astype(np.float32)
    visited = np.stack([obs for _, obs in recent]).astype(np.float32)

    def student_forward(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return decider.student(torch.from_numpy(rows)).numpy()

    run.student_latency_us = latency_us(student_forward, visited_features)
    run.teacher_latency_us = latency_us(bench.teacher.label, visited)
    run.seconds = time.perf_counter() - started
    return run


DAEMON_PUBLISH_INTERVAL_S = 0.05  # the daemon needs one (> 0); short, so the schedule's steps pace the gate
DAEMON_POLL_S = 0.2
DAEMON_STATS_INTERVAL_S = 0.02  # counters fresh enough for the peer to be held at the schedule's pace
DAEMON_WALL_CAP_S = 900.0  # a daemon run that has not ended by then is reported as not reached
DAEMON_READY_S = 600.0  # generous: on a loaded machine the roles (torch imports) take minutes to start


def run_daemon(
    bench: Bench,
    method: Method,
    seed: int,
    schedule: Schedule = Schedule(),
    on_step: Callable[[Run], None] | None = None,
) -> Run:
    """One run of ``method`` against a real, private daemon (``--daemon``): one gym peer plays
    through ``runtime.peer``; the daemon's roles decide, label and train as they always do
    (continuously, within ``distillation.cpu_share``). With the per-label schedule the peer is held
    before each step while the distiller has trained fewer than ``schedule.steps`` steps per answer,
    so every answer buys at least the training it buys in-process: a peer playing flat out would
    otherwise label faster than the distiller trains, and the count would measure compute, not the
    choice of labels. Labels are the teacher role's model calls (its cache makes a label for a
    teacher-acted step free); the student evaluated is the newest candidate on disk."""
    import threading

    from runtime.config import to_toml
    from runtime.learn.checkpoints import CheckpointStore, load_safetensors
    from runtime.learn.models import build_student
    from runtime.peer.gym import run_gym_peers
    from runtime.supervisor.launch import ChildDaemon, private_run_dir

    started = time.perf_counter()
    setup = bench.setup
    config = bench.method_config(method, seed, schedule)
    config["distillation"]["publish_interval_s"] = DAEMON_PUBLISH_INTERVAL_S
    run_dir = private_run_dir()
    config_path = run_dir / "label_efficiency.toml"
    config_path.write_text(
        to_toml(
            {section: table for section, table in config.items() if section != "daemon"}
            | {"daemon": {"stats_interval_s": DAEMON_STATS_INTERVAL_S}}
        )
    )
    student = build_student(bench.plugins, Settings.of(config), bench.observation_space, bench.action_space).eval()
    store = CheckpointStore(run_dir / "checkpoints")
    run = Run(method.name, seed)
    grid = iter(evaluation_grid(setup.max_labels))
    next_eval = next(grid)
    next_eval_steps = EVAL_EVERY_ENV_STEPS
    evaluated_version = -1
    stop = threading.Event()
    errors: list[BaseException] = []
    daemon = ChildDaemon(run_dir, config_path=str(config_path), defaults_only=True)
    try:
        daemon.wait_ready(DAEMON_READY_S)
        min_samples = config["distillation"]["min_samples"]

        def paced_stop() -> bool:
            """True to stop; holds the peer while the distiller owes training for the answers paid."""
            while schedule.per == "label" and not stop.is_set():
                status = daemon.status()
                distiller = status["roles"]["distillation"]
                answers = status["roles"]["teacher"]["counters"].get("labels", 0)
                trained = distiller["counters"].get("train_steps", 0)
                # A distiller that cannot train yet (fewer than min_samples: some labels go to the
                # held-out set) or rests (it trains a cycle, then waits for new labels) needs the peer.
                gauges = distiller["gauges"]
                if (
                    gauges.get("buffer", 0) < min_samples
                    or gauges.get("resting", False)
                    or trained >= schedule.steps * answers
                ):
                    break
                time.sleep(DAEMON_STATS_INTERVAL_S)
            return stop.is_set()

        def play() -> None:
            try:
                run_gym_peers(
                    daemon.endpoint, setup.env_id, episodes=10**9, peers=1, seed=seed * 100_000, should_stop=paced_stop
                )
            except BaseException as exc:  # reported below, after the daemon stopped
                errors.append(exc)

        player = threading.Thread(target=play, daemon=True)
        player.start()
        while not errors and time.perf_counter() - started < DAEMON_WALL_CAP_S:
            time.sleep(DAEMON_POLL_S)
            status = daemon.status()
            run.answers = run.labels = status["roles"]["teacher"]["counters"].get("labels", 0)
            run.env_steps = status["observations"]
            capped = run.labels >= setup.max_labels or run.env_steps >= setup.max_env_steps
            version = store.latest()
            if (
                not (run.labels >= next_eval or run.env_steps >= next_eval_steps or capped)
                or version == evaluated_version
            ):
                continue
            while run.labels >= next_eval:
                next_eval = next(grid, math.inf)
            next_eval_steps = run.env_steps + EVAL_EVERY_ENV_STEPS
            if version:
                student.load_state_dict(load_safetensors(store.path(version))[0])
            evaluated_version = version
            score = bench.evaluate(student)
            run.curve.append((run.labels, score))
            if on_step is not None:
                on_step(run)
            if score >= TARGET:
                run.labels_to_target, run.env_steps_to_target = run.labels, run.env_steps
                break
            if capped:
                break
        stop.set()
        player.join(timeout=60)
        status = daemon.status()
        distillation = status["roles"]["distillation"]
        run.train_steps = distillation["counters"].get("train_steps", 0)
        run.rejected = distillation["counters"].get("candidates_rejected", 0)
        run.promoted = distillation["gauges"].get("version", 0) - run.rejected
        run.teacher_acted = status["decisions"]["by_teacher"]
        run.student_share = 1 - run.teacher_acted / max(1, status["decisions"]["total"])
        run.failures = None  # the daemon does not tell how its peers' episodes ended
    finally:
        stop.set()
        daemon.stop()
    if errors:
        raise RuntimeError(f"the gym peer failed: {errors[0]!r}") from errors[0]
    starts = np.stack(
        [env.reset(seed=seed)[0] for env, seed in zip(bench.eval_envs, bench.eval_seeds, strict=True)]
    ).astype(np.float32)
    perceive = bench.perception()
    start_features = np.stack([perceive(obs, b"latency", True) for obs in starts]).astype(np.float32)

    def student_forward(observations: np.ndarray) -> np.ndarray:
        with bench.torch.no_grad():
            return student(bench.torch.from_numpy(observations)).numpy()

    run.student_latency_us = latency_us(student_forward, start_features)
    run.teacher_latency_us = latency_us(bench.teacher.label, starts)
    run.seconds = time.perf_counter() - started
    return run


# --- many runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    setup: EnvSetup
    method: Method
    seed: int


_BENCHES: dict[tuple[str, int], Bench] = {}  # a worker process's benches, built once per task


def _bench(setup: EnvSetup, eval_episodes: int) -> Bench:
    key = (setup.key, eval_episodes)
    if key not in _BENCHES:
        _BENCHES[key] = Bench(setup, eval_episodes)
    bench = _BENCHES[key]
    bench.setup = setup  # a task's configuration is fixed; its caps and methods may differ between calls
    return bench


def _run_job(
    job: Job,
    eval_episodes: int,
    schedule: Schedule,
    store: RunStore | None = None,
    on_step: Callable[[Run], None] | None = None,
) -> tuple[Run, bool]:
    """One in-process run (in a worker process with ``--workers``), and whether it was read from
    ``store``: looked up again just before running, as another process sharing the store may have
    finished it since this one started."""
    found = store.load(job, eval_episodes, schedule) if store is not None else None
    if found is not None:
        return found, True
    return simulate(_bench(job.setup, eval_episodes), job.method, job.seed, schedule, on_step), False


class RunStore:
    """Finished runs on disk (``--runs DIR``), one JSON file per run, so that a stopped run, or a
    sweep re-split between processes, skips the runs already done. In-process runs are
    deterministic: the same task (configuration and caps), method, seed, evaluation episodes and
    schedule give the same run, and those make a run's key."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(job: Job, eval_episodes: int, schedule: Schedule) -> dict[str, Any]:
        setup = job.setup
        task = {"key": setup.key, "env": setup.env_id, "config": setup.config, "max_labels": setup.max_labels,
                "max_env_steps": setup.max_env_steps, "control_period_s": setup.control_period_s,
                "failure": setup.failure}  # fmt: skip
        return json.loads(
            json.dumps(
                {
                    "task": task,
                    "method": dataclasses.asdict(job.method),
                    "seed": job.seed,
                    "eval_episodes": eval_episodes,
                    "schedule": dataclasses.asdict(schedule),
                },  # fmt: skip
                sort_keys=True,
                default=str,
            )
        )

    def path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        return self.directory / f"{key['task']['key']}-{key['method']['name']}-seed{key['seed']}-{digest}.json"

    def load(self, job: Job, eval_episodes: int, schedule: Schedule) -> Run | None:
        key = self.key(job, eval_episodes, schedule)
        try:
            stored = json.loads(self.path(key).read_text())
        except FileNotFoundError:
            return None
        if stored.get("key") != key:  # a digest collision, or a file edited by hand: run it again
            return None
        run = stored["run"]
        return Run(**{**run, "curve": [tuple(point) for point in run["curve"]]})

    def save(self, job: Job, eval_episodes: int, schedule: Schedule, run: Run) -> None:
        key = self.key(job, eval_episodes, schedule)
        atomic_write(self.path(key), json.dumps({"key": key, "run": dataclasses.asdict(run)}).encode())


def run_jobs(
    jobs: Sequence[Job],
    eval_episodes: int,
    schedule: Schedule,
    workers: int = 1,
    daemon: bool = False,
    show_progress: bool = True,
    store: RunStore | None = None,
) -> list[Run]:
    """Every job's run, in the jobs' order: here one after another (against a daemon with
    ``daemon``), or in ``workers`` processes. Runs are deterministic, so the split changes nothing.
    ``store``: runs found there are not run again, and every finished run is saved there."""
    stored = [store.load(job, eval_episodes, schedule) if store else None for job in jobs]
    runs: list[Run | None] = list(stored)
    todo = [index for index, run in enumerate(runs) if run is None]
    plain = show_progress and not sys.stderr.isatty()  # a log file gets one line per run instead of a bar

    def done(index: int) -> None:
        run, job = runs[index], jobs[index]
        if store is not None and run is not None and stored[index] is None:
            store.save(job, eval_episodes, schedule, run)
        if plain and run is not None:
            line = {"job": index + 1, "of": len(jobs), "task": job.setup.key, "method": job.method.name,
                    "params": job.method.params, "seed": run.seed, "labels_to_target": run.labels_to_target,
                    "labels": run.labels, "env_steps": run.env_steps, "seconds": round(run.seconds, 1),
                    "stored": stored[index] is not None}  # fmt: skip
            print(json.dumps(line), file=sys.stderr, flush=True)

    for index in range(len(jobs)):
        if stored[index] is not None:
            done(index)
    with progress_bar(show_progress and not plain) as progress:
        task = progress.add_task("starting", total=len(todo)) if progress else None
        if workers > 1 and not daemon:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(_run_job, jobs[i], eval_episodes, schedule, store): i for i in todo}
                for future in as_completed(futures):
                    index = futures[future]
                    runs[index], found = future.result()
                    stored[index] = runs[index] if found else None
                    done(index)
                    if progress is not None:
                        job = jobs[index]
                        progress.update(task, description=f"{job.setup.key} {job.method.name} seed {job.seed}")
                        progress.advance(task)
        else:
            for index in todo:
                job = jobs[index]

                def show(run: Run, job: Job = job) -> None:
                    if progress is not None:
                        progress.update(
                            task,
                            description=f"{job.setup.key} {job.method.name} seed {job.seed}: "
                            f"{run.labels} labels, {run.env_steps} steps",
                        )

                show(Run(job.method.name, job.seed))
                if daemon:
                    runs[index] = run_daemon(_bench(job.setup, eval_episodes), job.method, job.seed, schedule, show)
                else:
                    runs[index], found = _run_job(job, eval_episodes, schedule, store, show)
                    stored[index] = runs[index] if found else None
                done(index)
                if progress is not None:
                    progress.advance(task)
    return [run for run in runs if run is not None]


def auc(curve: Sequence[Sequence[float]], cap: int) -> float:
    """Area under the learning curve: the mean over label budgets 0..``cap`` of the score (clipped
    to [0, 1]) of the last evaluation at or before each budget, 0 before the first; a run that
    stopped keeps its last score up to the cap."""
    area, last_labels, last_score = 0.0, 0.0, 0.0
    for labels, score in curve:
        labels = min(labels, cap)
        area += (labels - last_labels) * last_score
        last_labels, last_score = labels, min(max(score, 0.0), 1.0)
    return (area + (cap - last_labels) * last_score) / cap


def mean_std(values: Sequence[float | int | None]) -> list[float] | None:
    """[mean, std] of the values that are not None, None if there are none."""
    present = [float(v) for v in values if v is not None]
    return [round(float(np.mean(present)), 3), round(float(np.std(present)), 3)] if present else None


def summarise_method(method: Method, runs: list[Run], cap: int) -> dict[str, Any]:
    reached = [r.labels_to_target for r in runs if r.labels_to_target is not None]
    areas = [round(auc(r.curve, cap), 4) for r in runs]
    return {
        "policy": method.policy,
        "params": method.params,
        "strategy": method.strategy,
        "strategy_params": method.strategy_params,
        "labels_to_target": [r.labels_to_target for r in runs],
        "labels_mean": float(np.mean(reached)) if reached else None,
        "labels_std": float(np.std(reached)) if reached else None,
        "reached": len(reached),
        "seeds": len(runs),
        "env_steps_to_target": [r.env_steps_to_target for r in runs],
        # Until the run ended: at the target, else at a cap.
        "labels": [r.labels for r in runs],
        "answers": [r.answers for r in runs],
        "env_steps": [r.env_steps for r in runs],
        "teacher_acted": [r.teacher_acted for r in runs],
        "episodes": [r.episodes for r in runs],
        "failures": [r.failures for r in runs],
        "auc": areas,
        "env_steps_mean_std": mean_std([r.env_steps for r in runs]),
        "teacher_acted_mean_std": mean_std([r.teacher_acted for r in runs]),
        "failures_mean_std": mean_std([r.failures for r in runs]),
        "auc_mean_std": mean_std(areas),
        "train_steps": [r.train_steps for r in runs],
        "final_score": [round(r.curve[-1][1], 4) if r.curve else None for r in runs],
        "promoted": [r.promoted for r in runs],
        "rejected": [r.rejected for r in runs],
        "student_share": float(np.mean([r.student_share for r in runs])),
        "student_latency_us": float(np.median([r.student_latency_us for r in runs])),
        "teacher_latency_us": float(np.median([r.teacher_latency_us for r in runs])),
        "seconds": round(sum(r.seconds for r in runs), 1),
        "curves": [[[labels, round(score, 4)] for labels, score in r.curve] for r in runs],
    }


def censored(labels: Sequence[int | None], cap: int) -> np.ndarray:
    """Labels to the target per seed, a seed that did not reach counted at the cap."""
    return np.array([cap if value is None else value for value in labels], dtype=float)


def ratio_interval(labels: Sequence[int | None], reference: Sequence[int | None], cap: int) -> list[float] | None:
    """A 90% bootstrap interval of mean(labels) / mean(reference), resampling seeds jointly
    (paired), a seed that did not reach counted at the cap; None with fewer than 3 seeds."""
    if len(labels) < 3 or len(labels) != len(reference):
        return None
    rows = np.random.default_rng(0).integers(0, len(labels), (BOOTSTRAP_RESAMPLES, len(labels)))
    ratios = censored(labels, cap)[rows].mean(axis=1) / censored(reference, cap)[rows].mean(axis=1)
    return [round(float(value), 3) for value in np.percentile(ratios, [5, 95])]


def compare(results: dict[str, dict[str, Any]], name: str, reference: str, cap: int) -> dict[str, Any] | None:
    """``name`` against ``reference``: the ratio of mean labels to the target (a seed that did not
    reach counted at the cap) with its 90% interval; None unless both ran."""
    if any(key not in results or "skipped" in results[key] for key in (name, reference)):
        return None
    mine, theirs = results[name]["labels_to_target"], results[reference]["labels_to_target"]
    if len(mine) != len(theirs):
        return None
    ratio = censored(mine, cap).mean() / censored(theirs, cap).mean()
    return {
        "method": name,
        "reference": reference,
        "ratio": round(float(ratio), 3),
        "ci90": ratio_interval(mine, theirs, cap),
        "reached": [results[name]["reached"], results[reference]["reached"]],
    }


def verdicts(tuned: dict[str, Any] | None, cap: int, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The comparisons decided in advance (``tuned``: the task's TUNED entry): the policy chosen in
    advance against uniform thinning (and DAgger), and soft targets against hard labels at that policy."""
    best = (tuned or {}).get("best")
    comparisons: dict[str, Any] = {"best_in_advance": best}
    if best is None:
        return comparisons
    comparisons["best_vs_dagger_uniform"] = compare(results, best, "dagger_uniform", cap)
    comparisons["best_vs_dagger"] = compare(results, best, "dagger", cap)
    comparisons["dagger_uniform_vs_dagger"] = compare(results, "dagger_uniform", "dagger", cap)
    comparisons["soft_vs_hard"] = compare(results, best, f"{best}+hard_label", cap)
    comparisons["calibrated_vs_hard"] = compare(results, f"{best}+soft_calibrated", f"{best}+hard_label", cap)
    comparisons["calibrated_vs_soft"] = compare(results, f"{best}+soft_calibrated", best, cap)
    return comparisons


def env_summary(bench: Bench, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    setup = bench.setup
    return {
        "env_id": setup.env_id,
        "teacher": setup.teacher,
        "teacher_return": round(bench.teacher_return, 2),
        "random_return": round(bench.random_return, 2),
        "threshold_return": round(bench.threshold_return(), 2),
        "target_score": TARGET,
        "max_labels": setup.max_labels,
        "max_env_steps": setup.max_env_steps,
        "failure": setup.failure,
        "student": {"plugin": bench.config["student"]["plugin"], "params": bench.config["student"]["params"]},
        "perception": bench.config["perception"]["transforms"],
        "strategy": {
            "name": bench.config["distillation"]["strategy"],
            "params": bench.config["distillation"]["params"],
        },
        "tuned": TUNED.get(setup.key),
        "methods": results,
        "verdict": verdicts(TUNED.get(setup.key), setup.max_labels, results),
    }


#: What the parts of a split run must share to be merged.
SHARED = ("benchmark", "quick", "mode", "seeds", "eval_episodes", "schedule")


def merge(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One output from the outputs (path -> output) of runs split by ``--methods`` between
    processes, with the same seeds and settings: each task's methods united, its verdicts
    recomputed; ValueError for parts that do not fit together."""
    (first_path, merged), *rest = ((path, copy.deepcopy(output)) for path, output in parts.items())
    for path, output in rest:
        for key in SHARED:
            if output.get(key) != merged.get(key):
                raise ValueError(f"{path}: {key} {output.get(key)!r} differs from {first_path}'s {merged.get(key)!r}")
        for title, env in output["envs"].items():
            into = merged["envs"].setdefault(title, env)
            if into is env:
                continue
            if (env["tuned"], env["max_labels"]) != (into["tuned"], into["max_labels"]):
                raise ValueError(
                    f"{path}: {title} was run with other settings (TUNED entry or caps) than in {first_path}"
                )
            if twice := sorted(set(env["methods"]) & set(into["methods"])):
                raise ValueError(f"{path}: {title}: {', '.join(twice)} also in another part")
            into["methods"].update(env["methods"])
        merged["seconds"] += output["seconds"]
    for env in merged["envs"].values():
        env["verdict"] = verdicts(env["tuned"], env["max_labels"], env["methods"])
    merged["parts"] = list(parts)
    return merged


def skipped(bench: Bench, method: Method) -> str | None:
    """Why ``method`` cannot run on ``bench``'s task, None if it can."""
    if method.policy == "disagreement" and not bench.ensemble_student():
        return (
            "needs an ensemble student (forward_members); the configured student "
            f"{bench.config['student']['plugin']!r} is not one"
        )
    return None


def capped(setup: EnvSetup, max_labels: int | None, max_env_steps: int | None) -> EnvSetup:
    """``setup`` with other caps where given."""
    return dataclasses.replace(
        setup, max_labels=max_labels or setup.max_labels, max_env_steps=max_env_steps or setup.max_env_steps
    )


def run_benchmark(
    envs: list[str] | None = None,
    seeds: int | list[int] = DEFAULT_SEEDS,
    quick: bool = False,
    methods: list[str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    eval_episodes: int | None = None,
    max_labels: int | None = None,
    max_env_steps: int | None = None,
    schedule: Schedule = Schedule(),
    show_progress: bool = True,
    daemon: bool = False,
    workers: int = 1,
    store: RunStore | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return its JSON-ready summary (what the last stdout line holds).

    ``daemon``: every run against a private daemon (``run_daemon``) instead of in-process.
    ``seeds``: a count (seeds 0..n-1) or explicit seeds. ``methods``: a subset of the task's
    (default: all, strategy variants included). ``overrides``: method -> params merged over that
    method's tuned ones. ``quick``: 5 evaluation episodes and halved caps (the command line also
    makes it 1 seed).
    """
    setups = env_setups(quick)
    envs = list(envs or setups)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    eval_episodes = eval_episodes or (5 if quick else 8)
    chosen: dict[str, list[Method]] = {}
    for key in envs:
        setup = setups[key]
        updated = dict(setup.methods)
        for name, params in (overrides or {}).items():
            if name not in updated:
                raise UnknownMethod(f"--set: unknown method {name!r}; methods: {', '.join(updated)}")
            method = updated[name]
            updated[name] = Method(
                name, method.policy, {**method.params, **params}, method.strategy, method.strategy_params
            )
        names = methods or list(updated)
        unknown = [name for name in names if name not in updated]
        if unknown:
            hint = "" if key in TUNED else f" ({key} is not tuned yet: run --tune and fill {TUNED_PATH.name})"
            raise UnknownMethod(f"unknown method {unknown[0]!r}; methods: {', '.join(updated)}{hint}")
        setups[key] = dataclasses.replace(capped(setup, max_labels, max_env_steps), methods=updated)
        chosen[key] = [updated[name] for name in names]
    started = time.perf_counter()
    benches = {key: _bench(setups[key], eval_episodes) for key in envs}
    skips = {(key, m.name): skipped(benches[key], m) for key in envs for m in chosen[key]}
    jobs = [
        Job(setups[key], method, seed)
        for key in envs
        for method in chosen[key]
        if skips[key, method.name] is None
        for seed in seed_list
    ]
    runs = iter(run_jobs(jobs, eval_episodes, schedule, workers, daemon, show_progress, store))
    results: dict[str, Any] = {}
    for key in envs:
        bench = benches[key]
        per_method: dict[str, dict[str, Any]] = {}
        for method in chosen[key]:
            reason = skips[key, method.name]
            if reason is not None:
                per_method[method.name] = {"policy": method.policy, "params": method.params, "skipped": reason}
                continue
            method_runs = [next(runs) for _ in seed_list]
            per_method[method.name] = summarise_method(method, method_runs, setups[key].max_labels)
        results[setups[key].title] = env_summary(bench, per_method)
    return {
        "benchmark": "label_efficiency",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {_cpu_count()} CPUs, python {platform.python_version()}",
        "quick": quick,
        "mode": "daemon" if daemon else "in_process",
        "seeds": seed_list,
        "eval_episodes": eval_episodes,
        "training": schedule.describe(),
        "schedule": {"per": schedule.per, "steps": schedule.steps, "publish_every": schedule.publish_every},
        "envs": results,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _NoProgress:
    def __enter__(self):
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def progress_bar(show: bool):
    if not show:
        return _NoProgress()
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )


# --- reporting ------------------------------------------------------------------------------------


def _pm(pair: list[float] | None, digits: int = 0) -> str:
    if pair is None:
        return "-"
    return f"{pair[0]:,.{digits}f} ± {pair[1]:,.{digits}f}"


def _labels_text(result: dict[str, Any]) -> str:
    if result["labels_mean"] is None:
        return "not reached"
    return _pm([result["labels_mean"], result["labels_std"]])


def _comparison_text(comparison: dict[str, Any] | None) -> str:
    if comparison is None:
        return "n/a"
    interval = comparison["ci90"]
    text = f"{comparison['method']} / {comparison['reference']} = {comparison['ratio']:.2f}"
    if interval:
        verdict = "fewer" if interval[1] < 1 else "more" if interval[0] > 1 else "no difference shown"
        text += f" (90% interval {interval[0]:.2f}-{interval[1]:.2f}: {verdict})"
    return text + f"; reached {comparison['reached'][0]} and {comparison['reached'][1]} seeds"


def print_tables(summary: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output (a file, CI log) gets a width that fits the table instead of 80 columns.
    console = console or (Console() if sys.stdout.isatty() else Console(width=200))
    for title, env in summary["envs"].items():
        table = Table(
            title=f"{title}: labels until the student alone scores >= {TARGET:.0%} "
            f"(return >= {env['threshold_return']:.0f}; teacher {env['teacher_return']:.0f}, "
            f"random {env['random_return']:.0f}); caps {env['max_labels']:,} labels, "
            f"{env['max_env_steps']:,} steps; failure: {failure_text(env['failure'])}",
            title_justify="left",
        )
        columns = ("method", "params", "labels to 95%", "reached", "env steps", "teacher-acted", "failures", "AUC")
        for column in (*columns, "student share", "teacher µs", "student µs"):
            table.add_column(column, justify="left" if column in ("method", "params") else "right")
        for name, result in env["methods"].items():
            params = ", ".join(f"{k}={v}" for k, v in result["params"].items()) or "-"
            if "skipped" in result:
                table.add_row(name, params, "skipped", *["-"] * 8)
                continue
            table.add_row(
                name,
                params,
                _labels_text(result),
                f"{result['reached']}/{result['seeds']}",
                _pm(result["env_steps_mean_std"]),
                _pm(result["teacher_acted_mean_std"]),
                _pm(result["failures_mean_std"], 1),
                _pm(result["auc_mean_std"], 2),
                f"{result['student_share']:.0%}",
                f"{result['teacher_latency_us']:.0f}",
                f"{result['student_latency_us']:.0f}",
            )
        console.print(table)
        verdict = env["verdict"]
        console.print(f"policy chosen in advance: {verdict['best_in_advance'] or 'none (task not tuned)'}")
        for key in ("best_vs_dagger_uniform", "best_vs_dagger", "soft_vs_hard", "calibrated_vs_hard"):
            if key in verdict:
                console.print(f"  {key}: {_comparison_text(verdict[key])}")
        for name, result in env["methods"].items():
            if "skipped" in result:
                console.print(f"[dim]{name} skipped: {result['skipped']}[/dim]")
    console.print(
        f"[dim]{summary['machine']}; {summary['seconds']:.0f} s; seeds {summary['seeds']}; "
        f"{summary['eval_episodes']} evaluation episodes[/dim]"
    )


def step_curve(curve: list[list[float]], grid: np.ndarray) -> np.ndarray:
    """A run's score at each label count of ``grid``: the last evaluation at or before it (NaN
    before the first); after the run stopped, its final score."""
    labels = np.array([point[0] for point in curve], dtype=float)
    scores = np.array([point[1] for point in curve], dtype=float)
    index = np.searchsorted(labels, grid, side="right") - 1
    return np.where(index >= 0, scores[np.maximum(index, 0)], np.nan)


def write_plot(summary: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    envs = summary["envs"]
    columns = min(3, len(envs))
    rows = -(-len(envs) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.5 * rows), squeeze=False)
    for axis in axes.flat[len(envs) :]:
        axis.set_visible(False)
    for axis, (title, env) in zip(axes.flat, envs.items(), strict=False):
        top = max((p[0] for r in env["methods"].values() for c in r.get("curves", []) for p in c), default=1)
        grid = np.unique(np.geomspace(GRID_START, max(top, GRID_START + 1), 200).round())
        lowest = -0.1
        for name, result in env["methods"].items():
            curves = [c for c in result.get("curves", []) if c]
            if not curves:
                continue
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns before the first evaluation
                mean = np.nanmean(np.array([step_curve(c, grid) for c in curves]), axis=0)
            if np.isfinite(mean).any():
                lowest = min(lowest, float(np.nanmin(mean)))
            style = "--" if name in BASELINES else ":" if "+" in name else "-"
            axis.plot(grid, mean, style, label=f"{name} ({result['reached']}/{result['seeds']})")
        axis.axhline(TARGET, color="grey", linewidth=0.8, linestyle=":")
        axis.set_xscale("log")
        ticks = [t for t in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000) if GRID_START <= t <= top]
        axis.set_xticks(ticks)
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_ylim(max(-1.0, lowest - 0.05), 1.1)
        axis.set_xlabel("teacher labels")
        axis.set_ylabel("normalised score of the student alone")
        # A registered env's id names its module ("runtime.peer.envs:agentrt/..."): its own name is enough.
        axis.set_title(f"{title.rsplit('/', 1)[-1]} (mean over {len(summary['seeds'])} seeds)")
        axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# --- tuning ---------------------------------------------------------------------------------------


def selection_key(labels: Sequence[int | None], cap: int) -> tuple[int, float]:
    """The tuning rule, smaller is better: most tuning seeds reached, then fewest mean labels (a
    seed that did not reach counted at the cap)."""
    return -sum(value is not None for value in labels), float(censored(labels, cap).mean())


def tune(
    envs: list[str],
    seeds: list[int],
    eval_episodes: int,
    schedule: Schedule,
    quick: bool,
    workers: int = 1,
    caps: tuple[int | None, int | None] = (None, None),
    methods: Sequence[str] = tuple(TUNABLE),
    store: RunStore | None = None,
) -> dict[str, Any]:
    """Run every tunable method at every rate of RATES on ``seeds``, and choose by ``selection_key``
    (ties: the lower rate): env key -> {"candidates": method -> [{rate, params, labels}], "rates":
    method -> chosen rate, "best": the query policy chosen in advance}. ``methods``: a subset of
    TUNABLE, so that a sweep can be split between processes (the best is then chosen in the subset)."""
    setups = env_setups(quick)
    unknown = [name for name in methods if name not in TUNABLE]
    if unknown:
        raise UnknownMethod(f"--tune: unknown method {unknown[0]!r}; tunable methods: {', '.join(TUNABLE)}")
    jobs, index = [], []
    for key in envs:
        setup = setups[key] = capped(setups[key], *caps)
        bench = _bench(setup, eval_episodes)
        for name in methods:
            for rate in RATES:
                method = tuned_method(name, rate, setup)
                if skipped(bench, method) is not None:
                    continue
                index.append((key, name, rate, method.params))
                jobs.extend(Job(setup, method, seed) for seed in seeds)
    runs = iter(run_jobs(jobs, eval_episodes, schedule, workers, store=store))
    results: dict[str, Any] = {}
    for key, name, rate, params in index:
        method_runs = [next(runs) for _ in seeds]
        results.setdefault(key, {"candidates": {}})["candidates"].setdefault(name, []).append(
            {
                "rate": rate,
                "params": params,
                "labels_to_target": [r.labels_to_target for r in method_runs],
                "env_steps": [r.env_steps for r in method_runs],
                "auc": [round(auc(r.curve, setups[key].max_labels), 4) for r in method_runs],
            }
        )
    for key, result in results.items():
        cap = setups[key].max_labels
        chosen = {
            name: min(entries, key=lambda entry: selection_key(entry["labels_to_target"], cap))
            for name, entries in result["candidates"].items()
        }
        result["rates"] = {name: entry["rate"] for name, entry in chosen.items()}
        policies = [name for name in QUERY_POLICIES if name in chosen]
        result["best"] = (
            min(policies, key=lambda name: selection_key(chosen[name]["labels_to_target"], cap)) if policies else None
        )
    return results


def print_tuning(results: dict[str, Any], seeds: list[int]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for key, result in results.items():
        table = Table(title=f"{key}: tuning (labels to 95% per tuning seed {seeds})", title_justify="left")
        for column in ("method", "rate", "params", "per seed", "mean (unreached at cap)", "chosen"):
            table.add_column(column)
        for name, entries in result["candidates"].items():
            for entry in entries:
                labels = entry["labels_to_target"]
                reached = sum(value is not None for value in labels)
                table.add_row(
                    name,
                    f"{entry['rate']:g}",
                    json.dumps(entry["params"]),
                    ", ".join("-" if v is None else str(v) for v in labels),
                    f"{np.mean([v for v in labels if v is not None] or [math.nan]):,.0f} ({reached}/{len(labels)})",
                    "<-" if result["rates"][name] == entry["rate"] else "",
                )
        console.print(table)
        console.print(f"{key}: policy chosen in advance: {result['best']}")
    console.print(f"{TUNED_PATH.name} entries (seeds {seeds}; add the date and command as a comment):")
    for key, result in results.items():
        rates = ", ".join(f"{name} = {rate:g}" for name, rate in result["rates"].items())
        console.print(f'[{key}]\nbest = "{result["best"]}"\nrates = {{ {rates} }}\n', markup=False, highlight=False)


# --- command line ---------------------------------------------------------------------------------


def parse_set(values: list[str]) -> dict[str, dict[str, Any]]:
    """``method.param=value`` (value as TOML: 0.2, true, "entropy") -> {method: {param: value}}."""
    import tomllib

    overrides: dict[str, dict[str, Any]] = {}
    for item in values:
        key, _, raw = item.partition("=")
        method, _, param = key.partition(".")
        if not (method and param and raw):
            raise SystemExit(f"--set {item!r}: expected method.param=value, e.g. budget.per_second=2")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        overrides.setdefault(method, {})[param] = value
    return overrides


TASKS = (
    "cartpole",
    "pendulum",
    "acrobot",
    "mountaincar_pixels",
    "multitask",
    "inverted_double_pendulum",
    "cartpole_ensemble",
    "pendulum_ensemble",
)
#: Tasks whose environments need an extra: task -> (module, extra).
TASK_EXTRAS = {"inverted_double_pendulum": ("mujoco", "mujoco")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=[*TASKS, "all"], default="all", help="a task, or all of them")
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help=f"seeds 0..N-1 (default {DEFAULT_SEEDS}; 1 with --quick; with --tune, from {TUNING_SEEDS[0]})",
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 5 evaluation episodes, halved caps")
    parser.add_argument("--methods", help="comma-separated subset of the methods (default: all of the task's)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.PARAM=VALUE",
        help="override a method's policy parameter (repeatable)",
    )
    parser.add_argument("--eval-episodes", type=int, help="evaluation episodes (default 8; 5 with --quick)")
    parser.add_argument("--max-labels", type=int, help="cap on labels per run (overrides the task's)")
    parser.add_argument("--max-env-steps", type=int, help="cap on environment steps per run (overrides the task's)")
    parser.add_argument(
        "--publish-every", type=int, default=Schedule.publish_every, help="training steps per promotion-gate check"
    )
    parser.add_argument(
        "--train-per",
        choices=["label", "env_step"],
        default=Schedule.per,
        help="what buys training steps (default: each label)",
    )
    parser.add_argument(
        "--train-steps",
        type=int,
        default=Schedule.steps,
        help="training steps per label (or per env step), every method",
    )
    parser.add_argument("--workers", type=int, default=1, help="in-process runs in this many processes")
    parser.add_argument("--plot", help="write learning curves (PNG) to this path")
    parser.add_argument("--out", help="also write the JSON result to this path")
    parser.add_argument("--tune", action="store_true", help=f"choose the settings on seeds {TUNING_SEEDS} instead")
    parser.add_argument(
        "--daemon",
        action="store_true",
        help="run against a private daemon and gym peers instead of in-process (slower)",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="PART",
        help="instead of running: merge the JSON outputs of runs split by --methods, recomputing the verdicts",
    )
    parser.add_argument(
        "--runs",
        metavar="DIR",
        help="keep every finished run in DIR and reuse the ones found there (resume a stopped run, re-split one)",
    )
    args = parser.parse_args(argv)
    if args.daemon and (args.tune or args.workers > 1):
        parser.error("--daemon runs one run at a time and does not tune")
    if args.runs and (args.daemon or args.merge):
        parser.error("--runs keeps in-process runs (a daemon's runs are not deterministic); --merge runs nothing")
    store = RunStore(args.runs) if args.runs else None
    if args.merge and (args.tune or args.daemon):
        parser.error("--merge runs nothing: it merges reported runs' outputs")
    envs = list(TASKS) if args.env == "all" else [args.env]
    needed = [("matplotlib", "bench", "--plot")] if args.plot else []
    needed += [(*TASK_EXTRAS[env], f"the {env} task") for env in envs if env in TASK_EXTRAS]
    try:
        for module, extra, needed_for in needed:
            extras.require(module, extra, needed_for)
    except extras.MissingExtra as exc:
        print(f"label_efficiency: {exc}", file=sys.stderr)
        return 2
    schedule = Schedule(args.train_per, args.train_steps, args.publish_every)
    eval_episodes = args.eval_episodes or (5 if args.quick else 8)
    try:
        if args.tune:
            first = TUNING_SEEDS[0]
            seeds = list(range(first, first + args.seeds)) if args.seeds else list(TUNING_SEEDS)
            results = tune(
                envs,
                seeds,
                eval_episodes,
                schedule,
                args.quick,
                args.workers,
                (args.max_labels, args.max_env_steps),
                args.methods.split(",") if args.methods else tuple(TUNABLE),
                store,
            )
            print_tuning(results, seeds)
            output: dict[str, Any] = {"tuning": results, "seeds": seeds, "date": time.strftime("%Y-%m-%d"),
                                      "eval_episodes": eval_episodes, "quick": args.quick}  # fmt: skip
        elif args.merge:
            try:
                output = merge({path: json.loads(Path(path).read_text()) for path in args.merge})
            except (OSError, ValueError, KeyError) as exc:  # JSONDecodeError is a ValueError
                print(f"label_efficiency: --merge: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 2
        else:
            output = run_benchmark(
                envs,
                args.seeds or (1 if args.quick else DEFAULT_SEEDS),
                args.quick,
                args.methods.split(",") if args.methods else None,
                parse_set(args.set),
                eval_episodes,
                args.max_labels,
                args.max_env_steps,
                schedule,
                daemon=args.daemon,
                workers=args.workers,
                store=store,
            )
    except UnknownMethod as exc:  # raised before any run starts
        print(f"label_efficiency: {exc}", file=sys.stderr)
        return 2
    if not args.tune:
        print_tables(output)
        if args.plot:
            write_plot(output, args.plot)
            output["plot"] = args.plot
    if args.out:
        atomic_write(args.out, json.dumps(output).encode())
    print(json.dumps(output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
