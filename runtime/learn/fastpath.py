"""The student's forward pass without torch's per-call overhead, where the student allows it.

A tiny MLP costs about 20 µs per call through torch and a few through numpy. ``NumpyForward``
traces the student with ``torch.fx`` (once per student module, not per version); if every
operation in its graph is one numpy can run (flatten, linear or int8 linear, relu, tanh, a
tuple's item), it runs that graph over numpy copies of the weights. It is used only after its
outputs equal torch's within ``TOLERANCE`` on probe inputs, checked again for every set of
weights served; any other student keeps the torch forward, as does a student served off the CPU
or in another dtype than float32 (``decision.device``, ``decision.dtype``): numpy runs on the
host in float32 only.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from runtime.learn.nets import Int8Linear

TOLERANCE = 1e-5

Op = Callable[..., Any]


def _linear(module: nn.Linear) -> Op:
    weight = module.weight.detach().numpy().T.copy()
    bias = None if module.bias is None else module.bias.detach().numpy().copy()
    return (lambda x: x @ weight) if bias is None else (lambda x: x @ weight + bias)


def _int8_linear(module: Int8Linear) -> Op:
    weight = module.dequantized().detach().numpy().T.copy()  # once per version served, not per call
    bias = module.bias.numpy().copy()
    return lambda x: x @ weight + bias


def _flatten(module: nn.Flatten) -> Op | None:
    if module.start_dim != 1 or module.end_dim != -1:
        return None
    return lambda x: x.reshape(len(x), -1)


def _module_op(module: nn.Module) -> Op | None:
    if isinstance(module, nn.Linear):
        return _linear(module)
    if isinstance(module, Int8Linear):
        return _int8_linear(module)
    if isinstance(module, nn.Flatten):
        return _flatten(module)
    if isinstance(module, nn.ReLU):
        return lambda x: np.maximum(x, 0)
    if isinstance(module, nn.Tanh):
        return np.tanh
    if isinstance(module, nn.Identity):
        return lambda x: x
    return None


class _Tracer(fx.Tracer):
    """Keeps ``Int8Linear`` one step of the graph, as torch's own layers are."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, Int8Linear) or super().is_leaf_module(module, qualified_name)


#: Each student's fx graph, traced once: a new version changes its weights, not its graph, and
#: tracing costs decision 10-20 ms per swap.
_GRAPHS: weakref.WeakKeyDictionary[nn.Module, fx.GraphModule | None] = weakref.WeakKeyDictionary()


def _graph(student: nn.Module) -> fx.GraphModule | None:
    """``student``'s fx graph (its submodules, so their current weights), or None if fx cannot trace it."""
    if student not in _GRAPHS:
        try:
            _GRAPHS[student] = fx.GraphModule(student, _Tracer().trace(student))
        except Exception:  # noqa: BLE001 (a student fx cannot trace keeps the torch forward)
            _GRAPHS[student] = None
    return _GRAPHS[student]


class NumpyForward:
    """A student's forward graph as numpy steps; build it with ``compile``."""

    def __init__(self, input_name: str, steps: list[tuple[str, Op, str]], output_name: str) -> None:
        self.input_name = input_name
        self.steps = steps  # (name, operation, name of its input), in graph order
        self.output_name = output_name

    @classmethod
    def compile(cls, student: nn.Module, probe: np.ndarray) -> NumpyForward | None:
        """The numpy forward of ``student`` with its current weights, or None if some operation is
        not supported or the outputs differ from torch's on ``probe`` (a float32 batch)."""
        graph = _graph(student)
        if graph is None:
            return None
        inputs = [node.name for node in graph.graph.nodes if node.op == "placeholder"]
        if len(inputs) != 1:
            return None
        steps: list[tuple[str, Op, str]] = []
        output_name = None
        for node in graph.graph.nodes:
            source = node.args[0] if node.args else None
            if node.op == "placeholder":
                continue
            if not isinstance(source, fx.Node) or node.kwargs:
                return None
            if node.op == "output":
                output_name = source.name
            elif node.op == "call_module" and len(node.args) == 1:
                op = _module_op(graph.get_submodule(node.target))
                if op is None:
                    return None
                steps.append((node.name, op, source.name))
            elif node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[1], int):
                steps.append((node.name, operator.itemgetter(node.args[1]), source.name))
            else:
                return None
        if output_name is None:
            return None
        fast = cls(inputs[0], steps, output_name)
        with torch.no_grad():
            expected = student(torch.from_numpy(probe)).numpy()
        actual = fast(probe)
        if actual.shape != expected.shape or not np.allclose(actual, expected, rtol=TOLERANCE, atol=TOLERANCE):
            return None
        return fast

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        values: dict[str, Any] = {self.input_name: inputs}
        for name, op, source in self.steps:
            values[name] = op(values[source])
        return np.asarray(values[self.output_name], dtype=np.float32)
