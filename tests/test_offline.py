"""``agentrt distill`` (runtime/learn/offline.py): offline distillation on digits, end to end.

The command runs through ``runtime.offline.main`` (the parser that ``add_parser`` registers and its
handler), so these tests do not depend on how the agentrt CLI wires it in. The end-to-end run uses
fewer steps than the defaults (600 per student, 1000 for the teacher) and no tuning to stay fast;
what they check is the method's honesty (disjoint data, choices on validation), not its result.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

pytest.importorskip("sklearn")
torch = pytest.importorskip("torch")

from runtime import config as config_module  # noqa: E402
from runtime.learn import offline  # noqa: E402
from runtime.learn.device import on_host  # noqa: E402
from runtime.plugin import pluginmanager  # noqa: E402

FAST = ["--steps", "600", "--teacher-steps", "1000", "--no-tune"]


def run_command(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = offline.main(list(argv))
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """One run of the command over 3 seeds: (summary, directory with its output files)."""
    directory = tmp_path_factory.mktemp("distill")
    code, out, err = run_command(
        "--json",
        "--seeds",
        "2",
        *FAST,
        "--output",
        str(directory / "student.safetensors"),
        "--save-teacher",
        str(directory / "teacher.safetensors"),
        "--plot",
        str(directory / "chart.png"),
    )
    assert code == 0, err
    return json.loads(out), directory


@pytest.fixture(scope="module")
def plugins():
    return pluginmanager.load(config_module.defaults()["plugins"])


def test_summary_has_the_documented_keys(distilled):
    summary, _ = distilled
    for key in (
        "dataset",
        "seeds",
        "teacher_accuracy",
        "distilled_accuracy",
        "hard_label_accuracy",
        "per_seed",
        "student_params",
        "teacher_params",
        "duration_s",
    ):
        assert key in summary, key
    assert summary["dataset"] == "digits"
    assert summary["device"] == "cpu float32"  # distillation.device's default, GPU or not
    assert summary["seeds"] == [0, 1] and len(summary["per_seed"]) == 2
    # mlp [32] on 64 inputs, 10 classes; teacher 256-256.
    assert summary["student_params"] == 64 * 32 + 32 + 32 * 10 + 10
    assert summary["teacher_params"] == 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    sizes = ("train_size", "teacher_only_size", "transfer_size", "validation_size")
    assert [summary[size] for size in sizes] == [300, 300, 406, 252] and sum(summary[s] for s in sizes) == 1258
    for name in ("teacher", "distilled", "hard_label"):
        per_seed = [r[f"{name}_accuracy"] for r in summary["per_seed"]]
        assert summary[f"{name}_accuracy"] == pytest.approx(np.mean(per_seed))
    gains = [r["distilled_accuracy"] - r["hard_label_accuracy"] for r in summary["per_seed"]]
    assert summary["improvement"] == pytest.approx(np.mean(gains))
    assert min(gains) <= summary["improvement_interval"][0] <= summary["improvement_interval"][1] <= max(gains)


def test_untuned_run_uses_the_offline_defaults_and_plain_cross_entropy(distilled):
    summary, _ = distilled
    for result in summary["per_seed"]:
        assert result["distilled_params"] == offline.OFFLINE_STRATEGY_PARAMS["soft_target"]
        assert result["hard_label_params"] == {"label_smoothing": 0.0, "weight_decay": 0.0}
    assert summary["teacher_accuracy"] > 0.9  # a sanity floor: the teacher learned digits


def test_every_split_is_disjoint_and_the_teacher_never_sees_the_transfer_labels():
    data = offline.prepare_data("digits")
    settings = offline.OfflineSettings()
    for seed in (0, 1):
        labelled, teacher_only, transfer = offline.partition(settings, data, seed)
        parts = [labelled, teacher_only, transfer, data.validation, data.test]
        assert sum(len(part) for part in parts) == len(data.y) == len(np.unique(np.concatenate(parts)))
        # "disjoint": the teacher learns the labelled examples and its own, never the transfer set.
        assert np.intersect1d(np.concatenate([labelled, teacher_only]), transfer).size == 0
    validation_again = offline.prepare_data("digits").validation
    assert np.array_equal(data.validation, validation_again)


def test_tuning_keeps_the_candidate_best_on_validation_not_on_test():
    class Constant(torch.nn.Module):
        def __init__(self, label: int) -> None:
            super().__init__()
            self.label = label

        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), self.label), 2).float()

    X = np.zeros((4, 1), np.float32)
    y = np.array([0, 0, 1, 1])  # validation: all 0; test: all 1
    data = offline.Data(X, y, train=np.array([], int), test=np.array([2, 3]), classes=2, validation=np.array([0, 1]))
    kept = offline.tuned(
        [{"label": 1}, {"label": 0}], lambda params: Constant(params["label"]), data, on_host("distillation")
    )
    assert kept.params == {"label": 0} and kept.validation_accuracy == 1.0


def test_given_parameters_stay_fixed_and_the_rest_are_searched():
    grid = offline.STRATEGY_GRIDS["soft_target"]
    assert offline.grid_points({"temperature": 3.0}, grid) == [
        {"temperature": 3.0, "alpha": alpha} for alpha in grid["alpha"]
    ]
    assert len(offline.grid_points({}, grid)) == len(offline.grid_points({}, offline.BASELINE_GRID)) == 8


def test_a_tuned_run_reports_choices_from_the_grids_and_warns_of_a_leaky_teacher(tmp_path):
    code, out, err = run_command(
        "--json", "--seeds", "1", "--steps", "20", "--teacher-steps", "20", "--teacher-data", "train", "--output", ""
    )
    assert code == 0, err
    summary = json.loads(out)
    (result,) = summary["per_seed"]
    assert result["distilled_params"] in offline.grid_points({}, offline.STRATEGY_GRIDS["soft_target"])
    assert result["hard_label_params"] in offline.grid_points({}, offline.BASELINE_GRID)
    assert 0 <= result["distilled_validation_accuracy"] <= 1
    assert summary["teacher_only_size"] == 0 and any("label leakage" in w for w in summary["warnings"])


def test_label_smoothing_reaches_the_baseline():
    data = offline.prepare_data("digits")
    settings = offline.OfflineSettings(steps=300, learning_rate=0.05)
    confidence = []
    for smoothing in (0.0, 0.3):
        torch.manual_seed(0)
        student = torch.nn.Sequential(torch.nn.Linear(64, 10))
        offline.train_hard_label(settings, data, student, data.train[:300], 0, lambda n: None, smoothing, 0.0)
        with torch.no_grad():
            confidence.append(student(torch.from_numpy(data.X[data.test])).softmax(dim=1).amax(dim=1).mean().item())
    assert confidence[0] > 0.9 and confidence[1] < confidence[0] - 0.1


def test_saved_student_loads_into_the_student_and_reproduces_its_accuracy(distilled, plugins):
    from gymnasium import spaces
    from safetensors import safe_open
    from safetensors.torch import load_file

    summary, directory = distilled
    path = directory / "student.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["student_plugin"] == "mlp"
    assert json.loads(metadata["student_params"]) == summary["student"]["params"]
    assert metadata["dataset"] == "digits" and metadata["strategy"] == "soft_target"
    student = plugins.build(
        "student",
        metadata["student_plugin"],
        json.loads(metadata["student_params"]),
        spaces.Box(-np.inf, np.inf, (int(metadata["input_size"]),), np.float32),
        spaces.Discrete(int(metadata["classes"])),
    )
    student.load_state_dict(load_file(str(path)), strict=True)
    data = offline.prepare_data(metadata["dataset"], float(metadata["test_fraction"]), int(metadata["split_seed"]))
    X_test, y_test = data.test_set
    with torch.no_grad():
        reproduced = float((student.eval()(torch.from_numpy(X_test)).argmax(dim=1).numpy() == y_test).mean())
    best = next(r for r in summary["per_seed"] if r["seed"] == summary["best_seed"])
    assert reproduced == pytest.approx(best["distilled_accuracy"], abs=1e-12)
    assert reproduced == pytest.approx(float(metadata["test_accuracy"]), abs=1e-12)
    # The best seed is the one best on validation, so its test accuracy is not a selected maximum.
    assert best["distilled_validation_accuracy"] == max(r["distilled_validation_accuracy"] for r in summary["per_seed"])
    # The module's own loader rebuilds the same network from the file alone.
    rebuilt, _ = offline.load_student(path, plugins)
    assert offline.accuracy(rebuilt, X_test, y_test, on_host("distillation")) == reproduced


def test_saved_teacher_is_a_checkpoint_teacher_and_can_be_reused(distilled, plugins, tmp_path):
    summary, directory = distilled
    path = directory / "teacher.safetensors"
    data = offline.prepare_data("digits")
    teacher = plugins.build("teacher", "checkpoint", {"path": str(path)}, *offline.spaces_for(data))
    X_test, y_test = data.test_set
    best = next(r for r in summary["per_seed"] if r["seed"] == summary["best_seed"])
    assert float((teacher.label(X_test).argmax(axis=1) == y_test).mean()) == pytest.approx(best["teacher_accuracy"])
    # --teacher PATH uses it instead of training one: its accuracy is the saved teacher's.
    code, out, err = run_command(
        "--json", "--seeds", "1", "--steps", "50", "--teacher", str(path), "--output", str(tmp_path / "s.safetensors")
    )
    assert code == 0, err
    reused = json.loads(out)
    assert reused["teacher_accuracy"] == pytest.approx(best["teacher_accuracy"])
    assert reused["teacher"] == {"path": str(path)} and reused["warnings"] == []


def test_plot_is_a_png(distilled):
    pytest.importorskip("matplotlib")
    _, directory = distilled
    assert (directory / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_results(tmp_path):
    runs = []
    for name in ("a", "b"):
        code, out, err = run_command(
            "--json",
            "--seeds",
            "1",
            "--first-seed",
            "7",
            "--steps",
            "60",
            "--teacher-steps",
            "60",
            "--output",
            str(tmp_path / f"{name}.safetensors"),
        )
        assert code == 0, err
        runs.append(json.loads(out))
    assert runs[0]["per_seed"] == runs[1]["per_seed"] and runs[0]["seeds"] == [7]
    from safetensors.torch import load_file

    first, second = (load_file(str(tmp_path / f"{name}.safetensors")) for name in ("a", "b"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_the_networks_train_where_the_distillation_section_says(tmp_path):
    config = tmp_path / "agentrt.toml"
    config.write_text('[distillation]\ndevice = "cpu"\ndtype = "bfloat16"\n')
    code, out, err = run_command("--config", str(config), "--json", "--seeds", "1", "--steps", "200",
                                 "--teacher-steps", "300", "--no-tune", "--output", "")  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["device"] == "cpu bfloat16"
    # bfloat16 forward passes (float32 weights) still learn: far above chance (10%) on digits.
    assert summary["teacher_accuracy"] > 0.8 and summary["distilled_accuracy"] > 0.5


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA: the device exists")
def test_a_device_this_host_lacks_fails_before_training_naming_the_key(tmp_path):
    config, output = tmp_path / "agentrt.toml", tmp_path / "student.safetensors"
    config.write_text('[distillation]\ndevice = "cuda"\n')
    code, out, err = run_command("--config", str(config), "--output", str(output))
    assert code == 2 and err.startswith("agentrt distill: distillation.device = 'cuda'"), err
    assert out == "" and not output.exists()


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--dataset", "mnist-ish"], "'mnist-ish'"),
        (["--strategy", "soft_targets"], "'soft_targets'"),
        (["--param", "temperature"], "'temperature'"),  # no '='
        (["--param", "temperature=[4,"], "'temperature=[4,'"),  # not a TOML value
        (["--param", "temperature=-1"], "-1"),  # rejected by the strategy
        (["--param", "temprature=4"], "'temprature'"),  # unknown to the strategy
        (["--train-size", "5000"], "5000"),
        (["--teacher-data", "everything"], "'everything'"),
        (["--validation-fraction", "0"], "0"),
        (["--teacher-size", "-1"], "-1"),
    ],
)
def test_bad_flags_fail_with_a_message_naming_the_value(argv, named, tmp_path):
    output = tmp_path / "student.safetensors"
    code, out, err = run_command(*argv, "--output", str(output))
    assert code == 2
    assert err.startswith("agentrt distill: ") and named in err, err
    assert out == "" and not output.exists()  # failed before training


def test_stratified_split_is_disjoint_balanced_and_repeatable():
    y = np.repeat(np.arange(4), [10, 20, 30, 40])
    train, test = offline.train_test_split(y, 0.3, split_seed=3)
    assert len(test) == 30 and np.intersect1d(train, test).size == 0 and len(train) + len(test) == 100
    assert np.bincount(y[test]).tolist() == [3, 6, 9, 12]
    again = offline.train_test_split(y, 0.3, split_seed=3)
    assert np.array_equal(test, again[1])
    assert not np.array_equal(test, offline.train_test_split(y, 0.3, split_seed=4)[1])


def test_param_values_are_toml_values_or_bare_words():
    assert offline.parse_assignments(
        "--param",
        ["temperature=4", "alpha=0.9", "t_squared=false", "direction=reverse", 'base="soft_target"', "hidden=[16, 16]"],
    ) == {
        "temperature": 4,
        "alpha": 0.9,
        "t_squared": False,
        "direction": "reverse",
        "base": "soft_target",
        "hidden": [16, 16],
    }
