"""The diagnosis steps (trainer_cli/diagnose/): each verdict is tested on a run or a history
that has the pathology it names."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.conftest import run_train
from trainer_cli import build
from trainer_cli.config import UserError, resolve
from trainer_cli.diagnose import curves, gradcheck, initial_loss, overfit
from trainer_cli.verdict import Verdict, markdown, panel, worst


def diagnose(make_cfg, tmp_path, *overrides):
    cfg = make_cfg(*overrides)
    return build.procedure(resolve(cfg))(cfg, tmp_path)


def read_report(tmp_path) -> str:
    return (tmp_path / "diagnosis.md").read_text()


# initial loss -----------------------------------------------------------------------------
def test_initial_loss_judges_distance_from_ln_c():
    assert initial_loss.judge(math.log(10) + 0.1, 10).status == "PASS"
    high = initial_loss.judge(math.log(10) + 1.0, 10)
    assert high.status == "WARN" and "initialization scale" in high.causes[0]
    assert initial_loss.judge(0.5, 10).status == "WARN"
    assert initial_loss.judge(math.inf, 10).status == "FAIL"


@pytest.mark.slow
def test_initial_loss_step_warns_on_a_large_init(make_cfg, tmp_path):
    summary = diagnose(make_cfg, tmp_path, "diagnose=initial_loss", "model.init=normal", "model.init_std=1.0")
    assert summary["verdict"] == "WARN"
    assert "above ln C" in read_report(tmp_path)
    healthy = diagnose(make_cfg, tmp_path / "ok", "diagnose=initial_loss")
    assert healthy["verdict"] == "PASS"


# overfit ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_overfit_passes_on_a_healthy_model(make_cfg, tmp_path):
    summary = diagnose(make_cfg, tmp_path, "diagnose=overfit", "mode.overfit_batches=2")
    assert summary["verdict"] == "PASS"
    assert (tmp_path / "overfit.png").is_file()
    assert "diagnose=lr" in read_report(tmp_path)  # the next step's command


def test_overfit_ranks_lr_too_high_first_when_the_loss_explodes(make_cfg, tmp_path):
    summary = diagnose(make_cfg, tmp_path, "diagnose=overfit", "optimizer=sgd", "lr=1e4", "mode.overfit_epochs=5")
    assert summary["verdict"] == "FAIL"
    report = read_report(tmp_path)
    assert "1. learning rate too high" in report and "lr=1000" in report


def test_overfit_ranks_lr_too_low_first_when_the_loss_is_flat(make_cfg, tmp_path):
    summary = diagnose(make_cfg, tmp_path, "diagnose=overfit", "lr=1e-8", "mode.overfit_epochs=3")
    assert summary["verdict"] == "FAIL"
    assert "1. learning rate too low" in read_report(tmp_path)


def test_overfit_names_a_constant_init(make_cfg, tmp_path):
    summary = diagnose(make_cfg, tmp_path, "diagnose=overfit", "model.init=constant", "mode.overfit_epochs=10")
    assert summary["verdict"] == "FAIL"
    report = read_report(tmp_path)
    assert "1. bad initialization (units with identical weights" in report and "model.init=default" in report


def test_identical_units_sees_only_unbroken_symmetry():
    layer = nn.Linear(4, 3)
    assert overfit.identical_units(layer) == []
    nn.init.constant_(layer.weight, 0.1)
    assert overfit.identical_units(layer) == ["weight"]


# lr and lr_range --------------------------------------------------------------------------
@pytest.mark.slow
def test_lr_picks_the_candidate_whose_loss_drops_most(make_cfg, tmp_path):
    summary = diagnose(
        make_cfg, tmp_path, "diagnose=lr", "lr=1e-6", "mode.lr_candidates=[1e-2,1e-6]", "mode.lr_iterations=20"
    )
    assert summary["verdict"] == "WARN"
    report = read_report(tmp_path)
    assert "learning rate too low" in report and "train trainer.device=cpu" not in report  # no Hydra record here
    assert "lr=0.01" in report


def test_lr_range_suggests_an_lr_and_stops_on_divergence(make_cfg):
    from trainer_cli.diagnose.lr import range_test, suggest

    cfg = resolve(make_cfg("optimizer=sgd"))
    lrs, smoothed = range_test(cfg, 1e-4, 1e4, 60)
    assert len(lrs) < 60  # the loss ran away before the sweep's end
    assert 1e-4 < suggest(lrs, smoothed) < 10
    assert min(smoothed) < smoothed[0]


@pytest.mark.slow
def test_lr_range_step_writes_its_plot(make_cfg, tmp_path):
    summary = diagnose(make_cfg, tmp_path, "diagnose=lr_range", "mode.range_steps=40")
    assert summary["diagnose/lr_range"] in ("PASS", "WARN")
    assert (tmp_path / "lr_range.png").is_file() and "suggested lr" in read_report(tmp_path)


# curves -----------------------------------------------------------------------------------
def history(train_loss, train_acc, val_loss, val_acc):
    return [
        {"epoch": i + 1, "train/loss": a, "train/acc": b, "val/loss": c, "val/acc": d}
        for i, (a, b, c, d) in enumerate(zip(train_loss, train_acc, val_loss, val_acc, strict=True))
    ]


OPTIONS = {"num_classes": 10, "fit_threshold": 0.95, "gap_tolerance": 0.05}
N = 10
HEALTHY = history(
    [2.0 * 0.6**i for i in range(N)], [0.5 + 0.05 * i for i in range(N)],
    [2.0 * 0.65**i + 0.1 for i in range(5)] + [0.33] * 5, [0.5 + 0.05 * i for i in range(N)],
)  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "run"),
    [
        ("diverging", history([2.0, 1.0, 3.0, math.nan], [0.3, 0.5, 0.2, 0.1], [2, 1, 3, 9], [0.3, 0.5, 0.2, 0.1])),
        ("not_decreasing", history([2.3] * N, [0.1] * N, [2.3] * N, [0.1] * N)),
        ("labels_unrelated", history([2.3 - 0.1 * i for i in range(N)], [0.1 + 0.05 * i for i in range(N)],
                                     [2.3 + 0.1 * i for i in range(N)], [0.1] * N)),
        ("high_bias", history([2.0 * 0.9**i for i in range(N)], [0.3 + 0.02 * i for i in range(N)],
                              [2.0 * 0.9**i for i in range(N)], [0.3 + 0.02 * i for i in range(N)])),
        ("high_variance", history([2.0 * 0.5**i for i in range(N)], [0.6 + 0.04 * i for i in range(N)],
                                  [1.0] * N, [0.6 + 0.01 * i for i in range(N)])),
        ("noisy", history([2.0, 1.0, 1.5, 0.8, 1.2, 0.7, 1.1, 0.6, 1.0, 0.5], [0.99] * N, [0.5] * N, [0.98] * N)),
        ("still_improving", history([2.0 * 0.6**i for i in range(N)], [0.99] * N,
                                    [2.0 * 0.7**i for i in range(N)], [0.98] * N)),
    ],
)  # fmt: skip
def test_each_curve_rule_fires_on_its_pathology_and_not_on_a_healthy_run(rule, run):
    fired = [f.rule for f in curves.findings(run, OPTIONS)]
    assert rule in fired
    function = getattr(curves, rule)
    assert function(HEALTHY, OPTIONS) is None


def test_a_healthy_history_passes():
    assert curves.judge(HEALTHY, OPTIONS, lambda *o: "train").status == "PASS"


@pytest.mark.slow
def test_curves_of_a_finished_run(make_cfg, tmp_path):
    from trainer_cli.train import run

    run(make_cfg("epochs=3", "lr=1e-9"), tmp_path / "flat")
    summary = diagnose(make_cfg, tmp_path / "diag", "diagnose=curves", f"mode.finished_run={tmp_path / 'flat'}")
    assert summary["verdict"] == "FAIL"
    assert "not going down" in read_report(tmp_path / "diag")


# gradcheck --------------------------------------------------------------------------------
class DoubledGradient(torch.autograd.Function):
    """tanh with a backward that is twice the true derivative: the bug gradcheck must catch."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return 2 * grad * (1 - y**2)


class BrokenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x):
        return self.out(DoubledGradient.apply(self.hidden(x)))


def test_gradcheck_fails_a_broken_backward_and_passes_autograd():
    torch.manual_seed(0)
    net, images, labels = BrokenNet(), torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    errors = gradcheck.relative_errors(net, images, labels, nn.CrossEntropyLoss())
    verdict = gradcheck.judge(errors)
    assert verdict.status == "FAIL" and "hidden.weight" in verdict.summary and "out.weight" not in verdict.summary
    healthy = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    assert gradcheck.judge(gradcheck.relative_errors(healthy, images, labels, nn.CrossEntropyLoss())).status == "PASS"


def test_gradcheck_step_on_the_configured_model(make_cfg, tmp_path):
    summary = diagnose(make_cfg, tmp_path, "diagnose=gradcheck", "model.activation=tanh", "mode.gradcheck_entries=3")
    assert summary["verdict"] == "PASS"
    assert "relative error net" in read_report(tmp_path) or "relative error" in read_report(tmp_path)


# the procedure ----------------------------------------------------------------------------
def test_the_panel_prints_commands_with_brackets_as_typed():
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(panel(Verdict("curves", "WARN", "gap", {}, ["variance"], "train 'regularization=[l2]'")))
    assert "train 'regularization=[l2]'" in console.export_text()


def test_worst_and_markdown():
    verdicts = [Verdict("a", "PASS", "fine"), Verdict("b", "FAIL", "bad", {"x": 1.5}, ["cause"], "train lr=1")]
    assert worst([v.status for v in verdicts]) == "FAIL"
    text = markdown(verdicts)
    assert "Overall: **FAIL**" in text and "1. cause" in text and "train lr=1" in text


def test_unknown_step_is_a_one_line_error(make_cfg, tmp_path):
    with pytest.raises(UserError, match="mode.steps: unknown step 'nope'"):
        diagnose(make_cfg, tmp_path, "diagnose=overfit", "mode.steps=[nope]")


@pytest.mark.slow
def test_cli_exits_1_on_fail_and_writes_the_report(tmp_path):
    result = run_train(
        ["diagnose=overfit", "lr=1e-8", "mode.overfit_epochs=2", "trainer.device=cpu", f"hydra.run.dir={tmp_path}"],
        tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert "FAIL" in result.stdout and "learning rate too low" in result.stdout
    report = read_report(tmp_path)
    assert "train lr=1e-08 mode.overfit_epochs=2 trainer.device=cpu diagnose=lr_range" not in report
    assert "train mode.overfit_epochs=2" not in report  # mode.* options are the procedure's, dropped
    assert "train trainer.device=cpu diagnose=lr_range" in report


def test_every_run_prints_the_initial_loss_verdict(make_cfg, tmp_path):
    from tests.conftest import build_run
    from trainer_cli import report
    from trainer_cli.train import check_initial_loss

    for overrides, status in ((["model.init=normal", "model.init_std=1.0"], "WARN"), ([], "PASS")):
        pieces = build_run(make_cfg(*overrides))
        with report.Reporter(tmp_path) as reporter, report.console.capture() as captured:
            check_initial_loss(pieces, reporter)
        assert f"initial loss {status}" in captured.get()


def test_the_next_command_keeps_the_users_overrides_and_replaces_the_changed_ones(tmp_path):
    from trainer_cli.diagnose.context import Context, user_overrides

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        "- model.init=constant\n- diagnose=all\n- lr=0.5\n- regularization=[l2,dropout]\n- mode.overfit_epochs=3\n"
    )
    base = user_overrides(tmp_path)
    assert base == ["model.init=constant", "'regularization=[l2,dropout]'"]
    ctx = Context(None, tmp_path, {}, None, base)
    assert ctx.command("model.init=default", "diagnose=overfit") == (
        "train 'regularization=[l2,dropout]' model.init=default diagnose=overfit"
    )


def test_diagnose_at_end_reads_the_curves_of_the_run(make_cfg, tmp_path):
    from trainer_cli.cli import execute

    execute(make_cfg("epochs=3", "lr=1e-9", "logger=[]", "trainer.diagnose_at_end=true"), tmp_path)
    report = read_report(tmp_path)
    assert "## curves: FAIL" in report and "not going down" in report and "(curves.png)" in report
    assert (tmp_path / "curves.png").is_file()


@pytest.mark.slow
def test_lr_auto_trains_with_the_range_tests_suggestion(make_cfg, tmp_path):
    from omegaconf import OmegaConf

    from trainer_cli.cli import execute
    from trainer_cli.diagnose.lr import range_test, suggest

    cfg = make_cfg("lr=auto", "epochs=1", "logger=[]")
    execute(cfg, tmp_path)
    recorded = OmegaConf.load(tmp_path / "resolved_config.yaml")
    expected = float(f"{suggest(*range_test(resolve(cfg), 1e-7, 10.0, 100)):.2g}")
    assert recorded.lr == recorded.optimizer.lr == expected != 1e-3
    assert (tmp_path / "lr_range.png").is_file()
