"""The pathology zoo, the signals and the ranked rules (issue 20)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from trainer_cli.diagnose import rules, signals, zoo
from trainer_cli.diagnose.causes import CAUSES, HEALTHY


def test_the_zoo_covers_every_cause_in_both_halves():
    cases = zoo.load_cases()
    assert len(cases) >= 24 and sum(c.cause == HEALTHY for c in cases) >= 8
    for half in zoo.HALVES:
        assert {c.cause for c in cases if c.half == half} == set(CAUSES), half
    # the split rule: alternate within each cause, in file order
    seen: Counter[str] = Counter()
    for case in cases:
        assert case.half == zoo.HALVES[seen[case.cause] % 2]
        seen[case.cause] += 1


def test_the_score_line_and_confusion_table():
    results = [("lr_too_high", "lr_too_high"), ("lr_too_low", "lr_too_high"), (HEALTHY, HEALTHY)]
    assert zoo.score(results) == "right cause first 1/2; healthy passes 1/1"
    table = zoo.confusion(results)
    assert "| lr_too_low | . | 1 | . |" in table.splitlines()[3] or "| lr_too_low |" in table


NEW_CASES = """cases:
  - {name: a_healthy, cause: healthy, overrides: []}
  - {name: b_healthy, cause: healthy, overrides: [lr=1e-3]}
  - {name: a_constant, cause: init_constant, overrides: [model.init=constant]}
"""


def test_a_new_cases_file_is_run_whole_with_half_all(tmp_path: Path):
    path = tmp_path / "heldout.yaml"
    path.write_text(NEW_CASES)
    cases = zoo.load_cases(path)
    assert [c.half for c in cases] == ["design", "held_out", "design"]  # split still computed
    assert [c.name for c in zoo.select(cases, zoo.ALL)] == ["a_healthy", "b_healthy", "a_constant"]
    assert [c.name for c in zoo.select(cases, "held_out")] == ["b_healthy"]
    assert [c.name for c in zoo.select(cases, zoo.ALL, only="a_constant")] == ["a_constant"]


@pytest.mark.slow
def test_the_zoo_script_runs_a_new_cases_file(tmp_path: Path):
    import subprocess
    import sys

    path = tmp_path / "heldout.yaml"
    path.write_text(NEW_CASES)
    script = Path(__file__).resolve().parents[1] / "scripts" / "diagnose_zoo.py"
    argv = [sys.executable, str(script), "--cases", str(path), "--half", "all", "--only", "a_constant"]
    out = subprocess.run([*argv, "--out", str(tmp_path / "out")], capture_output=True, text=True, check=True).stdout
    assert "ok  a_constant" in out and "all: right cause first 1/1; healthy passes 0/0" in out
    missing = subprocess.run([*argv[:3], str(tmp_path / "nope.yaml")], capture_output=True, text=True)
    assert missing.returncode == 2 and "--cases: no such file" in missing.stderr


def mlp(activation: type[nn.Module], depth: int, width: int = 32) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(depth):
        layers += [nn.Linear(16 if i == 0 else width, width), activation()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def test_gradient_norm_by_depth_sees_vanishing_gradients():
    torch.manual_seed(0)
    images, labels = torch.randn(64, 16), torch.randint(0, 10, (64,))
    deep_sigmoid = signals.depth_ratio(signals.gradient_norms(mlp(nn.Sigmoid, 10), images, labels))
    shallow_relu = signals.depth_ratio(signals.gradient_norms(mlp(nn.ReLU, 2), images, labels))
    assert deep_sigmoid < -2 < shallow_relu


def test_activation_scale_by_depth_sees_weights_too_small_for_the_depth():
    torch.manual_seed(0)
    images = torch.randn(64, 16)
    small = mlp(nn.ReLU, 6)
    for layer in signals.weight_layers(small):
        nn.init.normal_(layer.weight, std=0.01)
        nn.init.zeros_(layer.bias)  # as model.init=normal does
    ratio = lambda model: signals.dead_and_saturated(model, images)["act/depth_log10_ratio"]  # noqa: E731
    assert ratio(small) < -3 < -1 < ratio(mlp(nn.ReLU, 6))


def test_accuracy_by_mode_sees_strong_dropout_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    images = torch.randn(256, 16)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(0.9), nn.Linear(64, 10))
    labels = model.eval()(images).argmax(1)  # the eval-mode model fits these labels exactly
    model.train()
    state = torch.random.get_rng_state()
    acc = signals.accuracy_by_mode(model, images, labels)
    assert acc["probe/acc_eval_mode"] == 1.0 and acc["probe/acc_train_mode"] < 0.8
    assert model.training and torch.equal(state, torch.random.get_rng_state())


def test_loss_spread_sees_a_group_the_model_cannot_fit():
    logits = torch.full((100, 10), -5.0)
    labels = torch.zeros(100, dtype=torch.long)
    logits[:, 0] = 5.0  # confident class 0 ...
    labels[:30] = 3  # ... and 30 samples labelled otherwise
    model = nn.Identity()
    spread = signals.loss_spread(model, logits, labels)
    assert spread["probe/loss_above_chance"] == pytest.approx(0.3)
    assert spread["probe/loss_median"] < 0.01


def test_input_statistics_init_gain_units_and_penalty_share():
    stats = signals.input_statistics(torch.full((4, 3), 255.0))
    assert stats["input/mean"] == 255.0 and stats["input/std"] == 0.0
    layer = nn.Linear(100, 50)
    nn.init.normal_(layer.weight, std=0.01)
    assert signals.init_gain(nn.Sequential(layer)) == pytest.approx(0.1, rel=0.05)  # 0.01 * sqrt(100)
    nn.init.constant_(layer.weight, 0.3)
    assert signals.unit_similarity(nn.Sequential(layer)) == 0.0
    assert signals.penalty_share(lambda: {"l2": torch.tensor(3.0)}, data_loss=1.0) == 0.75
    assert signals.penalty_share(None, data_loss=1.0) == 0.0


HEALTHY_EVIDENCE = {
    "diverged": False, "chance loss": math.log(10), "train loss first": 1.6, "train loss last": 0.09,
    "train loss best": 0.09, "train acc best": 0.99, "val acc best": 0.97, "val loss tail fall": 0.01,
    "train loss tail fall": 0.03, "update ratio": 2.7e-3, "start input/mean": 0.0, "start input/std": 1.0,
    "start weights/unit_spread": 1.2, "start weights/init_gain": 0.58, "start grad/depth_log10_ratio": -0.2,
    "end probe/acc_eval_mode": 0.99, "end probe/acc_train_mode": 0.99, "end probe/dead_fraction": 0.1,
    "end penalty/share": 0.0, "end model/narrowest_hidden": 256,
}  # fmt: skip


def unfit(accuracy: float) -> dict[str, float]:
    """Evidence of a model that fits its training set only to `accuracy` (running and eval mode)."""
    return {"train acc best": accuracy, "end probe/acc_eval_mode": accuracy, "end probe/acc_train_mode": accuracy}


@pytest.mark.parametrize(
    ("changes", "cause"),
    [
        ({"start input/mean": 80.0, "start input/std": 100.0}, "inputs_not_preprocessed"),
        ({"start weights/unit_spread": 0.0}, "init_constant"),
        ({"start weights/init_gain": 16.0}, "init_too_large"),
        ({"start weights/init_gain": 0.03}, "init_too_small"),
        # a gain a little small (0.16) over 6 layers: the signal is 10^-4.7 at the last one
        (
            {"start weights/init_gain": 0.16, "start act/depth_log10_ratio": -4.7, **unfit(0.3)},
            "init_too_small",
        ),
        ({"start act/depth_log10_ratio": -4.7}, HEALTHY),  # the same in a net that fits
        ({"end penalty/share": 0.8, **unfit(0.6)}, "l2_too_strong"),
        (
            {"end probe/acc_eval_mode": 0.95, "end probe/acc_train_mode": 0.3, "train acc best": 0.4},
            "dropout_too_strong",
        ),
        ({"diverged": True, "train loss last": math.nan}, "lr_too_high"),
        ({"update ratio": 1e-6, "train acc best": 0.3, "val acc best": 0.3}, "lr_too_low"),
        ({"end probe/dead_fraction": 0.9, "train acc best": 0.2, "val acc best": 0.2}, "dead_relus"),
        ({"start grad/depth_log10_ratio": -4.0, **unfit(0.2), "val acc best": 0.2}, "vanishing_gradients"),
        # a deep tanh net: the first layer 14x slower, nothing learned, the updates tiny as a result
        (
            {"start grad/depth_log10_ratio": -1.15, **unfit(0.1), "val acc best": 0.1, "update ratio": 1e-6},
            "vanishing_gradients",
        ),
        ({"start grad/depth_log10_ratio": -1.15}, HEALTHY),  # the same imbalance in a net that fits
        ({"end probe/acc_eval_mode": 0.6, "train acc best": 0.6, "val acc best": 0.95}, "label_errors"),
        ({**unfit(0.5), "val acc best": 0.5, "end model/narrowest_hidden": 2}, "model_too_small"),
        # dropout lowers the running training accuracy of a model that fits: not a small model
        ({"train acc best": 0.85, "end probe/acc_train_mode": 0.94, "end probe/acc_eval_mode": 0.97}, HEALTHY),
        ({"train acc best": 1.0, "val acc best": 0.7}, "model_too_big"),
        ({"val loss tail fall": 0.2, "train loss tail fall": 0.2}, "too_few_epochs"),
        # one epoch: its mean training loss 1.83, the end model's 1.46 on the training probe
        (
            {
                "epochs": 1,
                "train loss last": 1.83,
                "train loss best": 1.83,
                "end probe/initial_loss": 1.46,
                **unfit(0.73),
                "val acc best": 0.8,
            },
            "too_few_epochs",
        ),
    ],
)
def test_each_rule_names_its_cause_first_and_a_healthy_run_passes(changes, cause):
    assert rules.first_cause(rules.findings(HEALTHY_EVIDENCE)) == HEALTHY
    assert rules.first_cause(rules.findings({**HEALTHY_EVIDENCE, **changes})) == cause


def test_one_ranked_answer_never_lists_opposite_causes():
    found = [
        rules.Finding("lr_too_low", 1, "a"),
        rules.Finding("lr_too_high", 2, "b"),
        rules.Finding("model_too_small", 1, "c"),
        rules.Finding("lr_too_high", 1, "d"),
    ]
    assert [f.cause for f in rules.rank(found)] == ["lr_too_high", "model_too_small"]
    with pytest.raises(ValueError, match="cause"):
        rules.Finding("not_a_cause", 1, "")


CHEAP = ["init_constant"]  # the default suite's end-to-end zoo case (~6 s); the others are slow


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[] if n in CHEAP else [pytest.mark.slow]) for n in
     ("init_constant", "healthy_default", "inputs_x255", "l2_strong", "dropout_09", "label_noise_40",
      "vanishing_sigmoid_10", "lr_high_sgd", "lr_low_adam")],
)  # fmt: skip
def test_a_zoo_run_is_diagnosed_with_its_cause(name: str, tmp_path: Path):
    case = next(c for c in zoo.load_cases() if c.name == name)
    diagnosis = zoo.diagnose_case(case, tmp_path / name)
    assert (diagnosis.ranked or [HEALTHY])[0] == case.cause, diagnosis.evidence


def test_a_history_verdict_lists_no_opposite_causes_and_its_next_command_tests_the_top_one():
    from trainer_cli.diagnose.context import diagnose_defaults
    from trainer_cli.diagnose.curves import judge

    # diverging (FAIL) and noisy; not-decreasing's "LR too low" must not sit beside "LR too high"
    rows = [{"epoch": i + 1, "train/loss": x, "train/acc": 0.1, "val/loss": x, "val/acc": 0.1}
            for i, x in enumerate([2.3, 2.0, 2.6, 2.1, 5.0])]  # fmt: skip
    verdict = judge(rows, {**diagnose_defaults(), "num_classes": 10}, lambda *o: "train " + " ".join(o))
    assert verdict.causes[0] == "learning rate too high"
    assert "learning rate too low" not in verdict.causes
    assert verdict.next_command == "train lr=<lr/10>"


def test_the_signals_hook_writes_its_readings_into_the_history(make_cfg, tmp_path):
    from trainer_cli.diagnose.examine import read_history
    from trainer_cli.train import run

    run(
        make_cfg("epochs=2", "logger=[]", "callbacks=[checkpoints,diagnose_signals]", "data.label_noise=0.3"),
        tmp_path,
    )
    history = read_history(tmp_path)
    assert "start/input/std" in history[0] and "start/input/std" not in history[1]
    assert all("grad/depth_log10_ratio" in row and "probe/acc_eval_mode" in row for row in history)
    # 30% of the training labels are wrong: the fixed probe cannot fit them all after 2 epochs
    assert history[-1]["probe/loss_above_chance"] > 0.1
