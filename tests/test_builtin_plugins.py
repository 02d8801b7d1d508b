"""The built-in students, perception transforms and execution filters, used as the runtime uses them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pluggy
import pytest
import torch
from gymnasium import spaces

import plugins.execution as execution
import plugins.perception as perception
import plugins.students as students
from runtime import hookspecs
from runtime.plugin.chains import Chain
from runtime.plugin.pluginmanager import Plugins
from runtime.wire.spaces import output_size

STUDENTS = students.agentrt_register_students()
TRANSFORMS = perception.agentrt_register_perception_transforms()
FILTERS = execution.agentrt_register_execution_filters()

UNBOUNDED = spaces.Box(-np.inf, np.inf, (2,), np.float32)


def builtin_plugins() -> Plugins:
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    for module in (students, perception, execution):
        manager.register(module)
    manager.check_pending()
    return Plugins(manager, {})


def test_hooks_register_every_builtin_name_through_pluggy():
    plugins = builtin_plugins()
    assert set(plugins.components["student"]) == {"mlp", "cnn", "gru", "ensemble"}
    assert set(plugins.components["perception"]) == {"normalize", "framestack", "image", "view"}
    assert set(plugins.components["execution"]) == {"clip", "rate_limit"}


def test_importing_and_running_transforms_and_filters_does_not_import_torch():
    root = Path(__file__).resolve().parents[1]
    code = "\n".join(
        [
            "import sys, numpy as np",
            "from gymnasium import spaces",
            "import plugins.students, plugins.perception as p, plugins.execution as e",
            "image = spaces.Box(0, 255, (6, 6, 3), np.uint8)",
            "for name in ('image', 'framestack', 'normalize'):",
            "    p.agentrt_register_perception_transforms()[name]({}, image)(np.zeros((6, 6, 3), np.float32), b's')",
            "box = spaces.Box(-1, 1, (2,), np.float32)",
            "e.build_clip({}, box)(np.zeros(2, np.float32), b's')",
            "e.build_rate_limit({'max_delta': 0.1}, box)(np.zeros(2, np.float32), b's')",
            "sys.exit(1 if 'torch' in sys.modules else 0)",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr or "torch was imported"


# --- students -------------------------------------------------------------------------------------

# name, params, observation space, width of forward_features' features
STUDENT_CASES = {
    "mlp": ("mlp", {"hidden": [8]}, spaces.Box(-1, 1, (4,), np.float32), 8),
    # 12x10 -> 6x5 -> 3x3 with padded stride-2 convolutions; 32 channels
    "cnn-hwc": ("cnn", {}, spaces.Box(0, 255, (12, 10, 3), np.uint8), 32 * 3 * 3),
    "cnn-chw": ("cnn", {"channels": [8], "channels_last": False}, spaces.Box(0, 1, (2, 9, 9), np.float32), 8 * 5 * 5),
    "cnn-stacked": ("cnn", {"channels": [4], "kernel": 5}, spaces.Box(0, 1, (4, 8, 8, 1), np.float32), 4 * 4 * 4),
    "gru": ("gru", {"hidden": 16, "layers": 2}, spaces.Box(-1, 1, (5, 3), np.float32), 16),
}
ACTION_SPACES = {"discrete": spaces.Discrete(3), "box": spaces.Box(-1, 1, (2,), np.float32)}


def build_student(name: str, params: dict, observation_space: spaces.Space, action_space: spaces.Space):
    return STUDENTS[name](params, observation_space, action_space)


def sample_batch(space: spaces.Box, batch: int = 4) -> torch.Tensor:
    space.seed(0)
    return torch.from_numpy(np.stack([space.sample() for _ in range(batch)]).astype(np.float32))


@pytest.mark.parametrize("action", ACTION_SPACES)
@pytest.mark.parametrize("case", STUDENT_CASES)
def test_student_outputs_features_and_gradients(case, action):
    name, params, observation_space, feature_width = STUDENT_CASES[case]
    torch.manual_seed(0)
    model = build_student(name, params, observation_space, ACTION_SPACES[action])
    x = sample_batch(observation_space)
    outputs, features = model.forward_features(x)
    assert outputs.shape == (4, output_size(ACTION_SPACES[action]))
    assert features.shape == (4, feature_width)
    assert torch.equal(model(x), outputs)
    outputs.pow(2).mean().backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name


def test_cnn_accepts_uint8_tensors_as_they_are():
    observation_space = spaces.Box(0, 255, (8, 8, 3), np.uint8)
    model = build_student("cnn", {}, observation_space, spaces.Discrete(2))
    pixels = torch.from_numpy(np.stack([observation_space.sample() for _ in range(2)]))
    assert torch.allclose(model(pixels), model(pixels.float()))


def test_cnn_channels_first_matches_channels_last_on_the_transposed_image():
    torch.manual_seed(0)
    last = build_student("cnn", {}, spaces.Box(0, 1, (9, 7, 2), np.float32), spaces.Discrete(3))
    torch.manual_seed(0)
    first = build_student("cnn", {"channels_last": False}, spaces.Box(0, 1, (2, 9, 7), np.float32), spaces.Discrete(3))
    x = torch.rand(3, 9, 7, 2)
    assert torch.allclose(last(x), first(x.permute(0, 3, 1, 2)), atol=1e-6)


def test_cnn_folds_stacked_frames_into_channels_frame_major():
    torch.manual_seed(0)
    stacked = build_student("cnn", {}, spaces.Box(0, 1, (3, 6, 6, 2), np.float32), spaces.Discrete(2))
    torch.manual_seed(0)
    flat = build_student("cnn", {}, spaces.Box(0, 1, (6, 6, 6), np.float32), spaces.Discrete(2))
    x = torch.rand(2, 3, 6, 6, 2)  # (B, k, H, W, C) -> (B, H, W, k * C), frame index major
    assert torch.allclose(stacked(x), flat(x.permute(0, 2, 3, 1, 4).reshape(2, 6, 6, 6)), atol=1e-6)


@pytest.mark.parametrize(
    "name, params, observation_space, message",
    [
        (
            "mlp",
            {"activation": "swish"},
            spaces.Box(-1, 1, (4,)),
            r"parameter 'activation' must be one of 'relu', 'tanh', 'gelu' \(got 'swish'\)",
        ),
        ("mlp", {"depth": 2}, spaces.Box(-1, 1, (4,)), "unknown parameter 'depth'"),
        ("cnn", {}, spaces.Box(0, 1, (8, 8)), r"needs an image of shape \(\.\.\., H, W, C\)"),
        ("cnn", {"channels_last": False}, spaces.Box(0, 1, (8, 8)), r"\(\.\.\., C, H, W\)"),
        ("cnn", {}, spaces.Discrete(5), "needs an image box observation space, got discrete"),
        (
            "cnn",
            {"channels": []},
            spaces.Box(0, 1, (8, 8, 1)),
            r"parameter 'channels' must be a non-empty list, each an integer > 0 \(got \[\]\)",
        ),
        ("cnn", {"channels": [8, 0]}, spaces.Box(0, 1, (8, 8, 1)), "parameter 'channels' must be"),
        ("cnn", {"kernel": 0}, spaces.Box(0, 1, (8, 8, 1)), r"parameter 'kernel' must be an integer > 0 \(got 0\)"),
        ("cnn", {"stride": "2"}, spaces.Box(0, 1, (8, 8, 1)), "parameter 'stride' must be an integer > 0"),
        (
            "cnn",
            {"channels_last": "yes"},
            spaces.Box(0, 1, (8, 8, 1)),
            "parameter 'channels_last' must be true or false",
        ),
        ("cnn", {"activation": "swish"}, spaces.Box(0, 1, (8, 8, 1)), "parameter 'activation' must be one of"),
        ("gru", {}, spaces.Box(-1, 1, (4,)), r"needs a 2-D \(T, D\) history"),
        ("gru", {}, spaces.Box(-1, 1, (2, 3, 4)), r"needs a 2-D \(T, D\) history"),
        ("gru", {}, spaces.Discrete(4), "got discrete"),
        ("gru", {"hidden": 0}, spaces.Box(-1, 1, (4, 2)), "parameter 'hidden' must be an integer > 0"),
        ("gru", {"layers": 1.5}, spaces.Box(-1, 1, (4, 2)), r"parameter 'layers' must be an integer > 0 \(got 1.5\)"),
        ("gru", {"bidirectional": True}, spaces.Box(-1, 1, (4, 2)), "unknown parameter 'bidirectional'"),
    ],
)
def test_student_rejects_bad_params_and_spaces_naming_itself(name, params, observation_space, message):
    with pytest.raises(ValueError, match=f"^student {name}: .*{message}"):
        build_student(name, params, observation_space, spaces.Discrete(2))


@pytest.fixture
def one_thread():
    # Models this small train fastest on one thread; more only contend with other processes.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def train_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 300) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def test_cnn_overfits_a_small_image_task(one_thread):
    # The class is the quadrant of a bright 2x2 patch on a dim noisy 8x8 image.
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (64,), generator=generator)
    images = torch.rand(64, 8, 8, 1, generator=generator) * 64
    offsets = torch.randint(0, 3, (64, 2), generator=generator)
    for i, label in enumerate(labels.tolist()):
        row, col = (label // 2) * 4 + offsets[i, 0], (label % 2) * 4 + offsets[i, 1]
        images[i, row : row + 2, col : col + 2, 0] = 255
    model = build_student("cnn", {"channels": [8, 16]}, spaces.Box(0, 255, (8, 8, 1), np.uint8), spaces.Discrete(4))
    assert train_accuracy(model, images / 255, labels) > 0.95


def test_gru_overfits_a_small_sequence_task(one_thread):
    # The class is the feature that grew most from the first step to the last: order matters.
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    sequences = torch.randn(64, 6, 3, generator=generator)
    labels = (sequences[:, -1] - sequences[:, 0]).argmax(dim=1)
    model = build_student("gru", {"hidden": 32}, spaces.Box(-np.inf, np.inf, (6, 3), np.float32), spaces.Discrete(3))
    assert train_accuracy(model, sequences, labels) > 0.95


# --- perception: framestack -----------------------------------------------------------------------


def framestack(**params):
    return TRANSFORMS["framestack"](params, UNBOUNDED)


def item(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_framestack_fills_with_the_first_item_then_shifts_oldest_first():
    step = framestack(k=3)
    assert step.output_space.shape == (3, 2) and step.output_space.dtype == np.float32
    outputs = [step(item(v, -v), b"a") for v in (1, 2, 3, 4)]
    assert outputs[0].tolist() == [[1, -1], [1, -1], [1, -1]]
    assert outputs[1].tolist() == [[1, -1], [1, -1], [2, -2]]
    assert outputs[3].tolist() == [[2, -2], [3, -3], [4, -4]]
    assert all(step.output_space.contains(output) for output in outputs)


def test_framestack_keeps_streams_apart():
    step = framestack(k=2)
    step(item(1, 1), b"a")
    assert step(item(9, 9), b"b").tolist() == [[9, 9], [9, 9]]
    assert step(item(2, 2), b"a").tolist() == [[1, 1], [2, 2]]
    assert step(item(8, 8), b"b").tolist() == [[9, 9], [8, 8]]


def test_framestack_reset_starts_the_stream_afresh_and_only_that_stream():
    step = framestack(k=2)
    step(item(1, 1), b"a")
    step(item(5, 5), b"b")
    step.reset(b"a")
    assert step(item(3, 3), b"a").tolist() == [[3, 3], [3, 3]]
    assert step(item(6, 6), b"b").tolist() == [[5, 5], [6, 6]]


def test_framestack_returns_copies_not_its_own_stack():
    step = framestack(k=2)
    first = step(item(1, 1), b"a")
    first[:] = 100
    assert step(item(2, 2), b"a").tolist() == [[1, 1], [2, 2]]


def test_framestack_forgets_the_least_recently_used_stream_beyond_max_streams():
    step = framestack(k=2, max_streams=2)
    step(item(1, 1), b"a")
    step(item(2, 2), b"b")
    step(item(1, 1), b"a")  # a is now more recent than b
    step(item(3, 3), b"c")  # evicts b
    assert len(step.stacks) == 2 and b"b" not in step.stacks
    assert step(item(4, 4), b"b").tolist() == [[4, 4], [4, 4]]  # b starts afresh, evicting a
    assert b"a" not in step.stacks and step(item(7, 7), b"c").tolist() == [[3, 3], [7, 7]]


def test_framestack_output_space_stacks_the_input_bounds():
    step = TRANSFORMS["framestack"]({"k": 2}, spaces.Box(np.array([0, -1]), np.array([255, 1]), dtype=np.int64))
    assert step.output_space.low.tolist() == [[0, -1], [0, -1]]
    assert step.output_space.high.tolist() == [[255, 1], [255, 1]]


@pytest.mark.parametrize(
    "params, space, message",
    [
        ({"k": 0}, UNBOUNDED, "parameter 'k' must be an integer > 0"),
        ({"max_streams": -1}, UNBOUNDED, "parameter 'max_streams' must be an integer > 0"),
        ({"size": 4}, UNBOUNDED, "unknown parameter 'size'"),
        ({}, spaces.Discrete(3), "needs a box observation space"),
    ],
)
def test_framestack_rejects_bad_params(params, space, message):
    with pytest.raises(ValueError, match=f"^perception framestack: .*{message}"):
        TRANSFORMS["framestack"](params, space)


# --- perception: image ----------------------------------------------------------------------------


def image_step(params: dict, shape: tuple[int, ...] = (4, 4, 3), high: float = 255):
    return TRANSFORMS["image"](params, spaces.Box(0, high, shape, np.uint8 if high == 255 else np.float32))


def test_image_default_resizes_an_atari_frame_to_84x84_in_unit_range():
    step = image_step({}, (210, 160, 3))
    assert step.output_space == spaces.Box(0, 1, (84, 84, 3), np.float32)
    frame = np.random.default_rng(0).integers(0, 255, (210, 160, 3)).astype(np.float32)
    frame[1, 0] = (255, 0, 51)  # output pixel (0, 0) samples source (1, 0): centres at 1.25 and 0.95
    out = step(frame, b"s")
    assert out.shape == (84, 84, 3) and out.dtype == np.float32 and step.output_space.contains(out)
    assert np.allclose(out[0, 0], [1, 0, 0.2])


def test_image_nearest_picks_the_source_pixel_under_each_output_centre():
    pixels = np.arange(16, dtype=np.float32).reshape(4, 4)
    shrunk = image_step({"size": [2, 2], "scale": 1.0}, (4, 4))(pixels, b"s")
    assert shrunk.shape == (2, 2, 1)
    assert shrunk[..., 0].tolist() == [[5, 7], [13, 15]]  # centres at source (1, 1), (1, 3), (3, 1), (3, 3)
    grown = image_step({"size": [4, 4], "scale": 1.0}, (2, 2))(np.array([[1, 2], [3, 4]], np.float32), b"s")
    assert grown[..., 0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


def test_image_bilinear_blends_neighbours_with_aligned_centres():
    step = image_step({"size": [4, 4], "scale": 1.0, "interpolation": "bilinear"}, (2, 2))
    out = step(np.array([[0, 4], [8, 12]], np.float32), b"s")[..., 0]
    weights = np.array([0, 0.25, 0.75, 1])  # output centres at source -0.25 (edge), 0.25, 0.75, 1.25 (edge)
    assert np.allclose(out, 8 * weights[:, None] + 4 * weights[None, :])


def test_image_bilinear_stays_inside_its_output_space():
    step = image_step({"size": [7, 5], "interpolation": "bilinear"}, (13, 11, 3))
    out = step(np.full((13, 11, 3), 255, np.float32), b"s")
    assert out.max() == 1.0 and step.output_space.contains(out)


def test_image_grayscale_uses_luma_for_rgb_and_ignores_alpha():
    rgb = np.zeros((2, 3, 3), np.float32)
    rgb[0, 0], rgb[0, 1], rgb[0, 2] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    out = image_step({"size": [2, 3], "grayscale": True}, (2, 3, 3))(rgb, b"s")
    assert out.shape == (2, 3, 1)
    assert np.allclose(out[0, :, 0], [0.299, 0.587, 0.114]) and np.allclose(out[1], 0)
    rgba = np.concatenate([rgb, np.full((2, 3, 1), 255, np.float32)], axis=2)
    assert np.allclose(image_step({"size": [2, 3], "grayscale": True}, (2, 3, 4))(rgba, b"s"), out)


def test_image_grayscale_averages_other_channel_counts():
    step = image_step({"size": [1, 1], "grayscale": True, "scale": 1.0}, (1, 1, 2), high=10.0)
    assert step(np.array([[[2, 6]]], np.float32), b"s").tolist() == [[[4.0]]]
    assert step.output_space == spaces.Box(0, 10, (1, 1, 1), np.float32)


@pytest.mark.parametrize(
    "params, shape, message",
    [
        ({"size": [84]}, (4, 4, 3), r"parameter 'size' must be a list of 2, each an integer > 0"),
        ({"size": [0, 84]}, (4, 4, 3), r"parameter 'size' must be a list of 2, each an integer > 0"),
        ({"scale": 0}, (4, 4, 3), "parameter 'scale' must be a number > 0"),
        ({"grayscale": 1}, (4, 4, 3), "parameter 'grayscale' must be true or false"),
        ({"interpolation": "cubic"}, (4, 4, 3), "parameter 'interpolation' must be one of 'nearest', 'bilinear'"),
        ({}, (16,), r"needs an image box observation space, \(H, W, C\) or \(H, W\)"),
        ({}, (2, 4, 4, 3), "needs an image box observation space"),
    ],
)
def test_image_rejects_bad_params_and_spaces(params, shape, message):
    with pytest.raises(ValueError, match=f"^perception image: .*{message}"):
        image_step(params, shape)


# --- perception: normalize and a whole chain ------------------------------------------------------


def test_normalize_standardises_and_clips():
    step = TRANSFORMS["normalize"]({"clip": 3.0}, UNBOUNDED)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        step(rng.normal([5, -2], [2, 0.5]).astype(np.float32), b"s")
    assert np.allclose(step(item(5, -2), b"s"), 0, atol=0.1)
    assert step(item(1000, -2), b"s")[0] == 3.0
    with pytest.raises(ValueError, match="^perception normalize: parameter 'clip' must be"):
        TRANSFORMS["normalize"]({"clip": -1}, UNBOUNDED)


def test_image_then_framestack_chain_feeds_a_cnn_student():
    chain = Chain(
        builtin_plugins(),
        "perception",
        ["image", "framestack"],
        {"image": {"size": [16, 16], "grayscale": True}, "framestack": {"k": 4}},
        spaces.Box(0, 255, (40, 30, 3), np.uint8),
    )
    assert chain.output_space.shape == (4, 16, 16, 1)
    features = chain(np.full((40, 30, 3), 255, np.float32), b"s")
    assert chain.output_space.contains(features)
    student = build_student("cnn", {}, chain.output_space, spaces.Discrete(2))
    assert student(torch.from_numpy(features[np.newaxis])).shape == (1, 2)


# --- execution ------------------------------------------------------------------------------------


BOX_ACTIONS = spaces.Box(-10, 10, (2,), np.float32)


def rate_limit(max_delta, **params):
    return FILTERS["rate_limit"]({"max_delta": max_delta, **params}, BOX_ACTIONS)


def test_rate_limit_limits_each_stream_from_its_own_previous_action():
    step = rate_limit(1.0)
    assert step(item(0, 0), b"a").tolist() == [0, 0]  # first action passes
    assert step(item(5, -0.5), b"a").tolist() == [1, -0.5]
    assert step(item(5, -0.5), b"a").tolist() == [2, -0.5]  # limited from the limited action sent
    assert step(item(5, 5), b"b").tolist() == [5, 5]  # another stream's first action passes
    assert step(item(-5, 3), b"a").tolist() == [1, 0.5]
    assert step(item(0, 0), b"b").tolist() == [4, 4]


def test_rate_limit_per_dimension_max_delta_and_dtype():
    step = rate_limit([1.0, 0.25])
    step(item(0, 0), b"a")
    out = step(item(3, -3), b"a")
    assert out.tolist() == [1, -0.25] and out.dtype == np.float32


def test_rate_limit_reset_forgets_the_stream():
    step = rate_limit(1.0)
    step(item(0, 0), b"a")
    step(item(0, 0), b"b")
    step.reset(b"a")
    assert step(item(7, 7), b"a").tolist() == [7, 7]
    assert step(item(7, 7), b"b").tolist() == [1, 1]


def test_rate_limit_forgets_the_least_recently_used_stream_beyond_max_streams():
    step = rate_limit(1.0, max_streams=1)
    step(item(0, 0), b"a")
    step(item(0, 0), b"b")
    assert len(step.previous) == 1
    assert step(item(7, 7), b"a").tolist() == [7, 7]


def test_rate_limit_moves_integer_actions_in_whole_steps():
    step = FILTERS["rate_limit"]({"max_delta": 2.5}, spaces.Box(-10, 10, (1,), np.int64))
    step(np.array([3]), b"a")
    out = step(np.array([-10]), b"a")
    assert out.tolist() == [1] and out.dtype == np.int64


@pytest.mark.parametrize(
    "params, space, message",
    [
        ({"max_delta": 1.0}, spaces.Discrete(3), "needs a box action space"),
        (
            {},
            BOX_ACTIONS,
            r"parameter 'max_delta' must be a number > 0, or a non-empty list, each a number > 0 \(not given\)",
        ),
        ({"max_delta": 0}, BOX_ACTIONS, "parameter 'max_delta' must be a number > 0"),
        ({"max_delta": [1.0, -1.0]}, BOX_ACTIONS, "parameter 'max_delta' must be a number > 0"),
        ({"max_delta": [1.0, 2.0, 3.0]}, BOX_ACTIONS, "broadcastable to shape"),
        ({"max_delta": "fast"}, BOX_ACTIONS, "parameter 'max_delta' must be a number"),
        ({"max_delta": True}, BOX_ACTIONS, r"parameter 'max_delta' must be a number > 0.*\(got True\)"),
        ({"max_delta": 1.0, "max_streams": 0}, BOX_ACTIONS, "parameter 'max_streams' must be an integer > 0"),
        (
            {"max_delta": 0.5},
            spaces.Box(-10, 10, (1,), np.int64),
            "parameter 'max_delta' must be at least 1 for an integer action space",
        ),
    ],
)
def test_rate_limit_rejects_bad_params_and_discrete_actions(params, space, message):
    with pytest.raises(ValueError, match=f"^execution rate_limit: .*{message}"):
        FILTERS["rate_limit"](params, space)


def test_clip_clamps_discrete_actions_to_the_valid_range():
    step = FILTERS["clip"]({}, spaces.Discrete(3))
    assert [int(step(np.array(a, np.int64), b"s")) for a in (-2, 0, 2, 5)] == [0, 0, 2, 2]
    assert step(np.array(5, np.int64), b"s").dtype == np.int64


def test_clip_clamps_box_actions_per_dimension():
    step = FILTERS["clip"]({}, spaces.Box(np.array([-1, 0]), np.array([1, 2]), dtype=np.float32))
    out = step(item(-3, 3), b"s")
    assert out.tolist() == [-1, 2] and out.dtype == np.float32
    assert step(item(0.5, 1.5), b"s").tolist() == [0.5, 1.5]
    with pytest.raises(ValueError, match="^execution clip: unknown parameter 'low'"):
        FILTERS["clip"]({"low": 0}, spaces.Discrete(3))


def test_ensemble_student_exposes_its_members_and_acts_on_their_mean():
    from runtime import config
    from runtime.plugin import pluginmanager

    plugins = pluginmanager.load(config.defaults()["plugins"])
    observation_space, action_space = spaces.Box(-1, 1, (4,), np.float32), spaces.Discrete(3)
    ensemble = plugins.build(
        "student", "ensemble", {"members": 3, "member_params": {"hidden": [8]}}, observation_space, action_space
    )
    x = torch.randn(5, 4)
    members = ensemble.forward_members(x)
    assert members.shape == (3, 5, 3)
    assert not torch.allclose(members[0], members[1])  # independently initialised
    torch.testing.assert_close(ensemble(x), members.mean(dim=0))
    outputs, features = ensemble.forward_features(x)
    assert features.shape == (5, 24)
    with pytest.raises(
        pluginmanager.PluginError, match=r"student ensemble: parameter 'members' must be an integer >= 2 \(got 1\)"
    ):
        plugins.build("student", "ensemble", {"members": 1}, observation_space, action_space)
