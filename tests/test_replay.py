"""Replay buffer bounds, eviction orders and prioritised sampling."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.learn.replay import ReplayBuffer


def batch(values, width=2):
    values = np.asarray(values, dtype=np.float32)
    return {"features": np.repeat(values[:, None], width, axis=1), "outputs": values[:, None]}


def test_capacity_is_bounded_by_samples_and_by_bytes():
    by_samples = ReplayBuffer(max_samples=5, max_bytes=10**9)
    by_samples.add(**batch(range(12)))
    assert len(by_samples) == 5 and by_samples.added == 12 and by_samples.evicted == 7
    # 2 + 1 float32 columns + a float64 priority = 20 bytes per sample: 100 bytes hold 5.
    by_bytes = ReplayBuffer(max_samples=1000, max_bytes=100)
    by_bytes.add(**batch(range(12)))
    assert by_bytes.capacity == 5 and len(by_bytes) == 5
    assert by_bytes.nbytes <= 100


def test_oldest_are_evicted_first():
    buffer = ReplayBuffer(max_samples=4, max_bytes=10**9)
    buffer.add(**batch(range(6)))
    assert sorted(buffer.columns["outputs"][:, 0].tolist()) == [2, 3, 4, 5]


def test_lowest_priority_is_evicted_first():
    buffer = ReplayBuffer(max_samples=3, max_bytes=10**9, eviction="lowest_priority")
    buffer.add(priority=np.array([0.5, 0.1, 0.9]), **batch([10, 11, 12]))
    buffer.add(priority=0.7, **batch([13]))
    assert sorted(buffer.columns["outputs"][:, 0].tolist()) == [10, 12, 13]


def test_prioritized_sampling_prefers_high_priority():
    buffer = ReplayBuffer(max_samples=2, max_bytes=10**9, prioritized=True, alpha=1.0, seed=1)
    buffer.add(priority=np.array([0.0, 1.0]), **batch([0, 1]))
    index, columns = buffer.sample(2000)
    share_of_second = float((columns["outputs"][:, 0] == 1).mean())
    # p = (1 + 1e-3) / (1 + 2e-3) for the second sample
    assert share_of_second == pytest.approx(0.999, abs=0.003)
    buffer.update_priorities(np.array([0, 1]), np.array([1.0, 0.0]))
    _, columns = buffer.sample(2000)
    assert float((columns["outputs"][:, 0] == 0).mean()) > 0.99


def test_unknown_eviction_is_refused():
    with pytest.raises(ValueError, match="eviction"):
        ReplayBuffer(10, 10**6, eviction="random")
