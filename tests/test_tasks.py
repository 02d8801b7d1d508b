"""Tasks where the choice of states matters (issue 11, item 2), end to end at small settings:

* pixels for the student, state for the teacher (examples/mountaincar_pixels.toml);
* a harder discrete task with an RL-trained teacher (examples/acrobot.toml);
* one student taught by two teachers on two tasks (examples/multitask.toml).

Each end-to-end test starts the real daemon with the example configuration, trains until the
distiller has published enough students and the peers have played enough episodes (progress, not
time), then lets the student act alone and compares its return with random actions and the
teacher's. The parts (the ``view`` transform and teacher, the ``tasks`` teacher, the environments)
are tested on their own first.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from runtime import config
from runtime.learn.checkpoints import load_safetensors
from runtime.peer import envs
from runtime.peer.gym import AttachSummary, run_gym_peers
from runtime.plugin import pluginmanager
from runtime.testing import start_daemon

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PIXELS = "runtime.peer.envs:agentrt/MountainCarPixels-v0"
MULTITASK = {task: f"runtime.peer.envs:agentrt/MultiTask{task}-v0" for task in ("CartPole", "Acrobot")}
# Random actions, mean over seeds 0-19: MountainCar never reaches the goal in its 200 steps, Acrobot
# rarely within its 500, CartPole falls after about 22 steps.
RANDOM_RETURN = {"MountainCar-v0": -200.0, "Acrobot-v1": -500.0, "CartPole-v1": 22.0}


def plugins():
    return pluginmanager.load(config.defaults()["plugins"])


def play(env_id: str, act, seeds) -> list[float]:
    """Returns of ``act(obs (1, ...)) -> outputs (1, A)`` (argmax acts), one episode per seed."""
    env = gymnasium.make(env_id)
    returns = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(int(np.argmax(act(obs[None]))))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


# --- the parts -------------------------------------------------------------------------------------


def test_view_transform_cuts_and_shapes_the_students_part_with_its_bounds():
    space = gymnasium.make(PIXELS).observation_space
    pixels = envs.PIXELS_HEIGHT * envs.PIXELS_WIDTH
    view = plugins().build(
        "perception", "view", {"stop": pixels, "shape": [envs.PIXELS_HEIGHT, envs.PIXELS_WIDTH]}, space
    )
    assert view.output_space.shape == (envs.PIXELS_HEIGHT, envs.PIXELS_WIDTH)
    assert view.output_space.low.min() == 0 and view.output_space.high.max() == 255
    observation = space.sample()
    np.testing.assert_array_equal(view(observation, b"s"), observation[:pixels].reshape(view.output_space.shape))
    state = plugins().build("perception", "view", {"start": pixels, "stop": pixels + 2}, space)
    np.testing.assert_array_equal(state.output_space.high, space.high[pixels:])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "parameter 'stop' must be an integer > 0 \\(not given\\)"),
        ({"start": 5, "stop": 5}, "parameter 'stop' must be > start \\(5\\) and <= the observation's 8 elements"),
        ({"stop": 9}, "parameter 'stop' must be > start"),
        ({"stop": 6, "shape": [2, 2]}, "parameter 'shape' must be 6 elements in all"),
    ],
)
def test_view_transform_rejects_parts_outside_the_observation(params, message):
    space = gymnasium.spaces.Box(-1, 1, (2, 4), np.float32)
    with pytest.raises(pluginmanager.PluginError, match=f"perception view: {message}"):
        plugins().build("perception", "view", params, space)


def test_mountaincar_pixels_show_where_the_car_is_and_carry_the_state():
    env = gymnasium.make(PIXELS)
    observation, _ = env.reset(seed=0)
    assert env.observation_space.contains(observation)
    assert observation.shape == (envs.PIXELS_HEIGHT * envs.PIXELS_WIDTH + 2,)
    image = observation[:-2].reshape(envs.PIXELS_HEIGHT, envs.PIXELS_WIDTH)
    np.testing.assert_array_equal(image, envs.render_mountaincar(observation[-2:]))
    # The car is a bright disc; moving right moves it right in the image.
    columns = np.arange(envs.PIXELS_WIDTH)
    centre = [float((envs.render_mountaincar(np.array([x, 0.0])).sum(0) * columns).sum()) for x in (-0.5, -0.45)]
    assert image.max() == 255 and centre[1] > centre[0]


def test_view_teacher_answers_from_the_state_the_observation_carries():
    space, actions = gymnasium.make(PIXELS).observation_space, gymnasium.spaces.Discrete(3)
    inner = {"plugin": "checkpoint", "params": {"path": "builtin:mountaincar"}}
    teacher = plugins().build("teacher", "view", {"start": 960, "stop": 962, "teacher": inner}, space, actions)
    alone = plugins().build(
        "teacher", "checkpoint", inner["params"], gymnasium.make("MountainCar-v0").observation_space, actions
    )
    observations = np.stack([space.sample() for _ in range(8)])
    np.testing.assert_allclose(teacher.label(observations), alone.label(observations[:, 960:]))
    with pytest.raises(pluginmanager.PluginError, match="teacher view: parameter 'teacher' must be a table"):
        plugins().build("teacher", "view", {"stop": 2, "teacher": "checkpoint"}, space, actions)


def test_multitask_environments_share_their_spaces_and_say_which_task_they_are():
    cartpole, acrobot = (gymnasium.make(env_id) for env_id in MULTITASK.values())
    assert cartpole.observation_space == acrobot.observation_space and cartpole.action_space == acrobot.action_space
    assert cartpole.observation_space.shape == (8,) and cartpole.action_space.n == 3
    observation, _ = cartpole.reset(seed=0)
    np.testing.assert_array_equal(observation[:2], [1, 0])
    np.testing.assert_array_equal(observation[2:6], gymnasium.make("CartPole-v1").reset(seed=0)[0])
    np.testing.assert_array_equal(observation[6:], [0, 0])  # padding
    assert cartpole.observation_space.contains(observation)
    observation, _ = acrobot.reset(seed=0)
    np.testing.assert_array_equal(observation[:2], [0, 1])
    # CartPole has no third action: it is taken as its second (push right), never refused.
    stepped = gymnasium.make("CartPole-v1")
    stepped.reset(seed=0)
    cartpole.reset(seed=0)
    np.testing.assert_array_equal(cartpole.step(2)[0][2:6], stepped.step(1)[0])


def test_the_in_turn_environment_plays_each_task_in_turn_and_names_it():
    both = gymnasium.make("runtime.peer.envs:agentrt/MultiTask-v0")
    cartpole = gymnasium.make(MULTITASK["CartPole"])
    assert both.observation_space == cartpole.observation_space and both.action_space == cartpole.action_space
    played = [both.reset()[1]["task"] for _ in range(3)]
    assert played == ["CartPole-v1", "Acrobot-v1", "CartPole-v1"]  # no seed: the next task in turn
    observation, info = both.reset(seed=7)  # a seed picks task seed % 2: the same episode every time
    assert info["task"] == "Acrobot-v1"
    np.testing.assert_array_equal(observation, gymnasium.make(MULTITASK["Acrobot"]).reset(seed=7)[0])
    assert both.step(0)[4]["task"] == "Acrobot-v1"
    assert both.reset(seed=4)[1]["task"] == "CartPole-v1"


def multitask_teacher():
    example = config.load(EXAMPLES / "multitask.toml", environ={})
    space = gymnasium.make(MULTITASK["CartPole"])
    return plugins().build(
        "teacher", "tasks", example["teacher"]["params"], space.observation_space, space.action_space
    )


def test_tasks_teacher_routes_each_row_to_its_tasks_teacher_and_pads_missing_actions():
    teacher = multitask_teacher()
    cartpole_obs = gymnasium.make(MULTITASK["CartPole"]).reset(seed=1)[0]
    acrobot_obs = gymnasium.make(MULTITASK["Acrobot"]).reset(seed=1)[0]
    outputs = teacher.label(np.stack([cartpole_obs, acrobot_obs, cartpole_obs]))
    cartpole = (
        plugins()
        .build("teacher", "checkpoint", {"path": "builtin:cartpole"}, *spaces_of("CartPole-v1"))
        .label(cartpole_obs[None, 2:6])
    )
    acrobot = (
        plugins()
        .build("teacher", "checkpoint", {"path": "builtin:acrobot"}, *spaces_of("Acrobot-v1"))
        .label(acrobot_obs[None, 2:8])
    )
    np.testing.assert_allclose(outputs[0, :2], cartpole[0], rtol=1e-5)  # batches round differently
    np.testing.assert_allclose(outputs[1], acrobot[0], rtol=1e-5)
    np.testing.assert_array_equal(outputs[0], outputs[2])
    assert outputs[0, 2] == pytest.approx(
        cartpole.min() - 30.0, abs=1e-4
    )  # far below CartPole's own actions: never chosen
    with pytest.raises(pluginmanager.PluginError, match="teacher tasks: parameter 'members'"):
        plugins().build("teacher", "tasks", {"members": [{"plugin": "checkpoint"}] * 2}, *spaces_of("CartPole-v1"))


def spaces_of(env_id: str):
    env = gymnasium.make(env_id)
    return env.observation_space, env.action_space


@pytest.mark.parametrize(
    ("name", "env_id", "threshold"), [("acrobot", "Acrobot-v1", -100.0), ("mountaincar", "MountainCar-v0", -130.0)]
)
def test_shipped_teacher_loads_by_name_and_plays_as_documented(name, env_id, threshold):
    from plugins.teachers import BUILTIN_CHECKPOINTS

    path = BUILTIN_CHECKPOINTS[name]
    assert path.stat().st_size < 1024 * 1024
    _, metadata = load_safetensors(path)
    assert metadata["env"] == env_id and metadata["architecture"] == "mlp"
    documented = float(metadata["mean_return"])
    assert documented >= threshold  # the recipe's acceptance rule
    teacher = plugins().build("teacher", "checkpoint", {"path": f"builtin:{name}"}, *spaces_of(env_id))
    returns = play(env_id, teacher.label, range(500, 505))
    # As good as documented, with room for five episodes against the 100 measured; far above random.
    assert np.mean(returns) >= documented - 30, (returns, documented)
    assert np.mean(returns) > RANDOM_RETURN[env_id] + 50, returns


# --- end to end ------------------------------------------------------------------------------------


def train(daemon, env_ids: list[str], episodes: int, versions: int, cap: int) -> dict[str, AttachSummary]:
    """Peers for every env id at once (two each), until each has played ``episodes`` episodes and the
    distiller has published ``versions`` candidates, or each has played ``cap`` (the test then fails
    on its student, not here)."""
    progress = {"published": 0}
    played = dict.fromkeys(env_ids, 0)
    lock = threading.Lock()
    summaries: dict[str, AttachSummary] = {}

    def on_episode(env_id: str):
        def count(_episode) -> None:
            with lock:
                played[env_id] += 1
                progress["published"] = daemon.status()["candidate_version"]

        return count

    def enough() -> bool:
        with lock:
            return min(played.values()) >= episodes and progress["published"] >= versions

    def run(env_id: str) -> None:
        summaries[env_id] = run_gym_peers(
            daemon.endpoint, env_id, episodes=cap, peers=2, seed=0, on_episode=on_episode(env_id), should_stop=enough
        )

    threads = [threading.Thread(target=run, args=(env_id,)) for env_id in env_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(summaries) == set(env_ids)  # a peer that failed raised in its thread
    return summaries


def student_returns(daemon, env_id: str, episodes: int = 4) -> list[float]:
    """The student acting alone (policy "student"), on seeds no training episode used."""
    summary = run_gym_peers(daemon.endpoint, env_id, episodes=episodes, peers=2, seed=1000, policy="student")
    assert summary.by_teacher == 0
    return [episode.episode_return for episode in summary.episodes]


def report(name: str, summaries: dict[str, AttachSummary], status: dict, returns: dict[str, list[float]]) -> None:
    print(
        json.dumps(
            {
                "example": name,
                "training": {env_id: [s.steps, s.by_teacher, len(s.episodes)] for env_id, s in summaries.items()},
                "distillation": status["distillation"],
                "student_returns": returns,
            }
        )
    )


def learn_mountaincar(daemon, name: str, env_id: str) -> tuple[dict, list[float]]:
    """Train on ``env_id`` until 3 students are published and 30 episodes played; the status and the
    student's returns acting alone. It must have had no errors and must reach the goal."""
    summaries = train(daemon, [env_id], episodes=30, versions=3, cap=400)
    status = daemon.wait_until(lambda s: s["student_version"] >= 3, what="published students")
    returns = student_returns(daemon, env_id)
    report(name, summaries, status, {env_id: returns})
    assert status["errors"]["total"] == 0, status["errors"]
    # Random actions never reach the goal (-200); the teacher takes about 120 steps.
    assert max(returns) > RANDOM_RETURN["MountainCar-v0"], returns
    return status, returns


@pytest.mark.timeout(300)
def test_student_learns_mountaincar_from_pixels_while_the_teacher_reads_the_state():
    daemon = start_daemon((EXAMPLES / "mountaincar_pixels.toml").read_text())
    try:
        _, returns = learn_mountaincar(daemon, "mountaincar_pixels", PIXELS)
        # A student that reads which way the car moves from two frames pumps energy and gets there.
        assert np.mean(returns) > -150, returns
    finally:
        daemon.stop()


@pytest.mark.timeout(300)
def test_student_learns_acrobot_from_an_rl_trained_teacher():
    daemon = start_daemon((EXAMPLES / "acrobot.toml").read_text())
    try:
        summaries = train(daemon, ["Acrobot-v1"], episodes=20, versions=4, cap=200)
        status = daemon.wait_until(lambda s: s["student_version"] >= 3, what="published students")
        returns = student_returns(daemon, "Acrobot-v1")
        report("acrobot", summaries, status, {"Acrobot-v1": returns})
        assert status["errors"]["total"] == 0, status["errors"]
        # Random actions: about -500; the teacher about -80.
        assert np.mean(returns) > -200, returns
    finally:
        daemon.stop()


@pytest.mark.timeout(300)
def test_one_student_learns_two_tasks_from_two_teachers():
    daemon = start_daemon((EXAMPLES / "multitask.toml").read_text())
    try:
        summaries = train(daemon, list(MULTITASK.values()), episodes=8, versions=4, cap=200)
        status = daemon.wait_until(lambda s: s["student_version"] >= 3, what="published students")
        returns = {task: student_returns(daemon, env_id) for task, env_id in MULTITASK.items()}
        report("multitask", summaries, status, returns)
        assert status["errors"]["total"] == 0, status["errors"]
        # Both tasks, one network: CartPole far above random (22), Acrobot far above random (-500).
        assert np.mean(returns["CartPole"]) > 200, returns
        assert np.mean(returns["Acrobot"]) > -200, returns
    finally:
        daemon.stop()


# --- MuJoCo: a continuous task harder than Pendulum (the `mujoco` extra) ---------------------------

DOUBLE_PENDULUM = "InvertedDoublePendulum-v5"


def needs_mujoco() -> None:
    """Skip unless the `mujoco` extra is installed (gymnasium's MuJoCo environments need mujoco and imageio)."""
    try:
        gymnasium.make(DOUBLE_PENDULUM).close()
    except (ImportError, gymnasium.error.DependencyNotInstalled) as exc:
        pytest.skip(f"needs the mujoco extra (pip install -e '.[mujoco]'): {exc}")


def test_shipped_double_pendulum_teacher_balances_like_its_lqr_expert():
    needs_mujoco()
    from plugins.teachers import BUILTIN_CHECKPOINTS
    from runtime.learn.recipes import inverted_double_pendulum as recipe

    path = BUILTIN_CHECKPOINTS["inverted_double_pendulum"]
    assert path.stat().st_size < 1024 * 1024
    _, metadata = load_safetensors(path)
    assert metadata["env"] == DOUBLE_PENDULUM and json.loads(metadata["input_shape"]) == [9]
    np.testing.assert_allclose(recipe.lqr_gains()[0], json.loads(metadata["lqr_gains"]), atol=1e-3)
    teacher = plugins().build(
        "teacher", "checkpoint", {"path": "builtin:inverted_double_pendulum"}, *spaces_of(DOUBLE_PENDULUM)
    )
    env = gymnasium.make(DOUBLE_PENDULUM)
    for seed in (500,):
        obs, _ = env.reset(seed=seed)
        total, steps, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(np.clip(teacher.label(obs[None])[0], -1, 1))
            total, steps, done = total + float(reward), steps + 1, terminated or truncated
        assert steps == 1000 and total >= 0.95 * float(metadata["expert_mean_return"]), (seed, steps, total)


@pytest.mark.timeout(300)
def test_student_learns_to_balance_the_double_pendulum_online():
    needs_mujoco()
    daemon = start_daemon((EXAMPLES / "inverted_double_pendulum.toml").read_text())
    try:
        summaries = train(daemon, [DOUBLE_PENDULUM], episodes=40, versions=6, cap=300)
        status = daemon.wait_until(lambda s: s["student_version"] >= 6, what="published students")
        returns = student_returns(daemon, DOUBLE_PENDULUM)
        report("inverted_double_pendulum", summaries, status, {DOUBLE_PENDULUM: returns})
        assert status["errors"]["total"] == 0, status["errors"]
        # Random forces: about 50 (the poles fall within ~10 steps); the teacher: 9,360 (1,000 steps).
        assert np.mean(returns) > 2000, returns
    finally:
        daemon.stop()


# --- a pixel teacher, the GPU-sized example (issue 13, item 5) ------------------------------------
FRAMES = "runtime.peer.envs:agentrt/MountainCarFrames-v0"


def test_mountaincar_frames_show_the_previous_and_the_current_frame():
    env = gymnasium.make(FRAMES)
    observation, _ = env.reset(seed=0)
    assert observation.shape == (envs.PIXELS_HEIGHT, envs.PIXELS_WIDTH, 2)
    assert env.observation_space.contains(observation)
    np.testing.assert_array_equal(observation[..., 0], observation[..., 1])  # at rest after a reset
    # Frames are drawn from the float32 observation MountainCar returns.
    state = np.asarray(env.unwrapped.state, dtype=np.float32)
    following, *_ = env.step(2)
    np.testing.assert_array_equal(following[..., 0], envs.render_mountaincar(state))
    after = np.asarray(env.unwrapped.state, dtype=np.float32)
    assert after[0] != state[0]
    np.testing.assert_array_equal(following[..., 1], envs.render_mountaincar(after))


def test_shipped_pixel_teacher_is_a_cnn_that_drives_from_pixels_as_documented():
    from plugins.teachers import BUILTIN_CHECKPOINTS
    from runtime.learn.nets import CNN, parameter_count

    path = BUILTIN_CHECKPOINTS["mountaincar_cnn"]
    assert path.stat().st_size < 2 * 1024 * 1024
    _, metadata = load_safetensors(path)
    assert metadata["env"] == "agentrt/MountainCarFrames-v0" and metadata["architecture"] == "cnn"
    documented = float(metadata["mean_return"])
    assert documented >= -140.0  # the recipe's acceptance rule
    teacher = plugins().build("teacher", "checkpoint", {"path": "builtin:mountaincar_cnn"}, *spaces_of(FRAMES))
    assert isinstance(teacher.module, CNN) and parameter_count(teacher.module) > 200_000
    returns = play(FRAMES, teacher.label, range(500, 505))
    assert np.mean(returns) >= documented - 30, (returns, documented)
    assert np.mean(returns) > RANDOM_RETURN["MountainCar-v0"] + 50, returns


@pytest.mark.timeout(300)
def test_a_student_25_times_smaller_learns_mountaincar_from_the_pixel_teacher():
    from runtime.learn.checkpoints import read_checkpoint
    from runtime.learn.nets import parameter_count

    daemon = start_daemon((EXAMPLES / "mountaincar_cnn.toml").read_text())
    try:
        status, returns = learn_mountaincar(daemon, "mountaincar_cnn", FRAMES)
        served = read_checkpoint(str(registry_file(daemon, status["student_version"])))[0]
        student_parameters = sum(tensor.numel() for tensor in served.values())
        teacher = plugins().build("teacher", "checkpoint", {"path": "builtin:mountaincar_cnn"}, *spaces_of(FRAMES))
        assert parameter_count(teacher.module) >= 10 * student_parameters, student_parameters
        assert np.mean(returns) > -160, returns
    finally:
        daemon.stop()


def registry_file(daemon, version: int) -> Path:
    from runtime.learn.checkpoints import CheckpointStore
    from runtime.learn.registry import CHECKPOINTS

    return CheckpointStore(daemon.run_dir / CHECKPOINTS).path(version)
