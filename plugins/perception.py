"""Built-in perception transforms: observation -> features.

Pick by the observations and the student:

* ``normalize``: vector observations whose components have very different scales (the usual first
  transform for an ``mlp`` student on a control task).
* ``image``: image observations; resizes, optionally greys and scales frames for a ``cnn`` student.
* ``view``: the observation carries more than the student should see, at known offsets (pixels
  followed by the state a teacher reads, say: docs/distillation.md); picks the student's part and
  gives it its shape. Put it first.
* ``framestack``: the student needs a short history (velocities from positions, motion from
  frames): an ``mlp`` over the flattened stack, a ``gru`` over its steps or a ``cnn`` over frames.
  Put it last, after the transforms that work on single observations.

No torch here: the perception process loads this module and runs these transforms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from runtime import hookimpl
from runtime.plugin.interfaces import StreamStep
from runtime.plugin.params import (
    Param,
    and_,
    boolean,
    box_space,
    declare,
    ge,
    gt,
    in_,
    integer,
    list_of,
    number,
    optional,
    positive_int,
    view_space,
)
from runtime.plugin.streams import StreamState

# ITU-R BT.601 luma weights, the usual RGB -> grey conversion (as in OpenCV and Pillow).
_LUMA = np.array([0.299, 0.587, 0.114])


class RunningNormalize(StreamStep):
    """Standardise features with a running mean and variance shared by all streams (Welford),
    clipped to ±``clip`` standard deviations; keeps learning while the agent runs."""

    def __init__(self, input_space: spaces.Box, clip: float, epsilon: float) -> None:
        shape = input_space.shape
        self.output_space = spaces.Box(-clip, clip, shape=shape, dtype=np.float32)
        self.count = 0
        self.mean = np.zeros(shape, dtype=np.float64)
        self.m2 = np.zeros(shape, dtype=np.float64)
        self.clip = clip
        self.epsilon = epsilon

    def __call__(self, features: np.ndarray, stream: bytes) -> np.ndarray:
        self.count += 1
        delta = features - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (features - self.mean)
        std = np.sqrt(self.m2 / max(self.count - 1, 1)) + self.epsilon
        return np.clip((features - self.mean) / std, -self.clip, self.clip).astype(np.float32)


_POSITIVE = and_(number, gt(0))


@declare(
    "perception normalize",
    clip=Param(5.0, "clip standardised features to this many standard deviations", _POSITIVE),
    epsilon=Param(1e-8, "added to the standard deviation", _POSITIVE),
)
def build_normalize(params: dict[str, Any], input_space: spaces.Space) -> RunningNormalize:
    """Standardise vector features by a running mean and std (shared by all streams)."""
    space = box_space("perception normalize", input_space, "a box observation space")
    return RunningNormalize(space, params["clip"], params["epsilon"])


class FrameStack(StreamStep):
    """The last ``k`` feature arrays of each stream, oldest first: output shape ``(k, *input_shape)``.

    A new stream (or one just reset) starts with ``k`` copies of its first item, so the student sees
    a full-size history from the first step, with no made-up zeros. At most ``max_streams`` streams
    are kept; the least recently used one is dropped beyond that.
    """

    def __init__(self, input_space: spaces.Box, k: int, max_streams: int) -> None:
        self.k = k
        stacked = (k, *input_space.shape)
        self.output_space = spaces.Box(
            np.broadcast_to(input_space.low, stacked).astype(np.float32),
            np.broadcast_to(input_space.high, stacked).astype(np.float32),
            shape=stacked,
            dtype=np.float32,
        )
        self.stacks: StreamState[np.ndarray] = StreamState(max_streams)

    def __call__(self, features: np.ndarray, stream: bytes) -> np.ndarray:
        stack = self.stacks.get(stream)
        if stack is None:
            stack = np.repeat(np.asarray(features, dtype=np.float32)[np.newaxis], self.k, axis=0)
            self.stacks.put(stream, stack)
        else:
            stack[:-1] = stack[1:]
            stack[-1] = features
        return stack.copy()  # the stack changes in place on the stream's next item

    def reset(self, stream: bytes) -> None:
        self.stacks.forget(stream)


@declare(
    "perception framestack",
    k=Param(4, "items kept per stream", positive_int),
    max_streams=Param(1024, "streams kept; the least recently used is dropped beyond that", positive_int),
)
def build_framestack(params: dict[str, Any], input_space: spaces.Space) -> FrameStack:
    """The last ``k`` items of each stream, oldest first: output shape ``(k, *input_shape)``."""
    space = box_space("perception framestack", input_space, "a box observation space")
    return FrameStack(space, params["k"], params["max_streams"])


class ImageResize(StreamStep):
    """Resize an ``(H, W, C)`` or ``(H, W)`` image to ``size``, optionally to grey, and scale it.

    ``nearest`` (the default) picks the source pixel under each output pixel's centre: cheapest, and
    it keeps thin features (sprites, lines) crisp. ``bilinear`` blends the four nearest source pixels:
    smoother, for natural images. Neither averages over a large area when shrinking much, so fine
    detail may alias. Grey is the BT.601 luma of RGB (an alpha channel is ignored) or, for other
    channel counts, the channel mean. The output is ``(height, width, 1 or C)`` float32, channels-last.
    """

    def __init__(
        self, input_space: spaces.Box, size: list[int], grayscale: bool, scale: float, interpolation: str
    ) -> None:
        in_height, in_width = input_space.shape[:2]
        channels = input_space.shape[2] if len(input_space.shape) == 3 else 1
        self.in_shape = (in_height, in_width, channels)
        self.rows = _sample_grid(in_height, size[0], interpolation)
        self.cols = _sample_grid(in_width, size[1], interpolation)
        self.grey = None
        if grayscale and channels > 1:
            self.grey = np.zeros(channels, dtype=np.float32)
            if channels in (3, 4):
                self.grey[:3] = _LUMA
            else:
                self.grey[:] = 1.0 / channels
        self.scale = scale
        # Resizing and greying blend pixels with weights summing to 1, so the bounds only scale.
        self.low = np.float32(np.min(input_space.low) * scale)
        self.high = np.float32(np.max(input_space.high) * scale)
        out_channels = 1 if grayscale else channels
        self.output_space = spaces.Box(self.low, self.high, shape=(size[0], size[1], out_channels), dtype=np.float32)

    def __call__(self, image: np.ndarray, stream: bytes) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32).reshape(self.in_shape)
        image = _resample(image, self.rows, axis=0)
        image = _resample(image, self.cols, axis=1)
        if self.grey is not None:
            image = (image @ self.grey)[..., np.newaxis]
        # float32 rounding in the blends can overshoot the bounds by an ulp; the space must hold.
        return np.clip(image * self.scale, self.low, self.high).astype(np.float32, copy=False)


def _sample_grid(source: int, target: int, interpolation: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``target`` output positions along one axis: two source indices and the weight of
    the second (0 for nearest). Pixel centres are aligned (half-pixel offsets), as OpenCV does."""
    centres = (np.arange(target) + 0.5) * (source / target)
    if interpolation == "nearest":
        index = np.minimum(centres.astype(np.int64), source - 1)
        return index, index, np.zeros(target, dtype=np.float32)
    position = np.clip(centres - 0.5, 0, source - 1)
    first = position.astype(np.int64)
    second = np.minimum(first + 1, source - 1)
    return first, second, (position - first).astype(np.float32)


def _resample(image: np.ndarray, grid: tuple[np.ndarray, np.ndarray, np.ndarray], axis: int) -> np.ndarray:
    first, second, weight = grid
    if first is second:  # nearest
        return np.take(image, first, axis=axis)
    shape = [1] * image.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    return np.take(image, first, axis=axis) * (1 - weight) + np.take(image, second, axis=axis) * weight


@declare(
    "perception image",
    size=Param([84, 84], "[height, width] of the output", list_of(positive_int, length=2)),
    grayscale=Param(False, "convert to one grey channel", boolean),
    scale=Param(1 / 255, "multiplies pixel values (1/255: uint8 frames land in [0, 1])", _POSITIVE),
    interpolation=Param("nearest", "nearest or bilinear", in_("nearest", "bilinear")),
)
def build_image(params: dict[str, Any], input_space: spaces.Space) -> ImageResize:
    """Resize image observations, optionally to grey, and scale them, for a ``cnn`` student."""
    space = box_space(
        "perception image", input_space, "an image box observation space, (H, W, C) or (H, W)", min_ndim=2, max_ndim=3
    )
    return ImageResize(space, params["size"], params["grayscale"], params["scale"], params["interpolation"])


class View(StreamStep):
    """The elements ``start:stop`` of the flattened observation, reshaped: see ``view_space``."""

    def __init__(self, output_space: spaces.Box, start: int, stop: int) -> None:
        self.output_space = output_space
        self.start, self.stop = start, stop

    def __call__(self, features: np.ndarray, stream: bytes) -> np.ndarray:
        part = np.asarray(features, dtype=np.float32).reshape(-1)[self.start : self.stop]
        return part.reshape(self.output_space.shape)


#: The parameters the ``view`` transform and the ``view`` teacher share (plugins/teachers.py).
VIEW_PARAMS = {
    "start": Param(0, "first element of the part, in the flattened observation", and_(integer, ge(0))),
    "stop": Param(None, "one past its last element (required)", and_(integer, gt(0))),
    "shape": Param(None, "the part's shape (unset: flat)", optional(list_of(positive_int))),
}


@declare("perception view", **VIEW_PARAMS)
def build_view(params: dict[str, Any], input_space: spaces.Space) -> View:
    """Elements ``start:stop`` of the flattened observation, as ``shape``: the student's part of an
    observation that also carries the teacher's (pixels for the student, state for the teacher)."""
    start, stop = params["start"], params["stop"]
    return View(view_space("perception view", input_space, start, stop, params["shape"]), start, stop)


@hookimpl
def agentrt_register_perception_transforms() -> dict[str, Any]:
    return {"normalize": build_normalize, "framestack": build_framestack, "image": build_image, "view": build_view}
