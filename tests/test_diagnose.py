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
from trainer_cli.diagnose.context import diagnose_defaults
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


def recorded(run, **columns):
    """A history with training-health columns, as a run with them records (one value per epoch)."""
    return [{**row, **{name: values[i] for name, values in columns.items()}} for i, row in enumerate(run)]


# The options as conf/mode/diagnose.yaml writes them (the one place they are set).
OPTIONS = {**diagnose_defaults(), "num_classes": 10}
N = 10
HEALTHY = recorded(
    history(
        [2.0 * 0.6**i for i in range(N)], [0.5 + 0.05 * i for i in range(N)],
        [2.0 * 0.65**i + 0.1 for i in range(5)] + [0.33] * 5, [0.5 + 0.05 * i for i in range(N)],
    ),
    update_ratio=[1e-2 * 0.6**i for i in range(N)],  # a healthy run's: 1e-2 falling to 1e-4, median ~1e-3
    dead_fraction=[0.06] * N, dead_layer=["3"] * N, saturated_fraction=[0.0] * N, saturated_layer=["6"] * N,
)  # fmt: skip
FITS = history([2.0 * 0.6**i for i in range(N)], [0.99] * N, [0.5 * 0.9**i for i in range(N)], [0.98] * N)


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
        ("plateau_then_drop", history([2.30, 2.29, 2.27, 1.6, 1.0, 0.6, 0.4, 0.3, 0.25, 0.2], [0.99] * N,
                                      [0.5] * N, [0.98] * N)),
        # SGD at lr=1 on digits logged 0.26, 0.11, 0.065 ... per epoch: far above ~1e-3
        ("update_ratio", recorded(FITS, update_ratio=[0.26, 0.11, 0.07, 0.06, 0.05, 0.05, 0.04, 0.04, 0.04, 0.04])),
        ("dead_units", recorded(FITS, dead_fraction=[0.69, 0.93, 0.87, 0.87] + [0.87] * 6, dead_layer=["6"] * N)),
        ("saturated_units", recorded(FITS, saturated_fraction=[0.86] * N, saturated_layer=["3"] * N)),
    ],
)  # fmt: skip
def test_each_curve_rule_fires_on_its_pathology_and_not_on_a_healthy_run(rule, run):
    fired = [f.rule for f in curves.findings(run, OPTIONS)]
    assert rule in fired
    function = getattr(curves, rule)
    assert function(HEALTHY, OPTIONS) is None


def test_update_ratio_names_its_side_and_the_health_numbers_reach_the_panel():
    low = curves.update_ratio(recorded(FITS, update_ratio=[1e-6] * N), OPTIONS)
    assert low.causes == ["learning rate too low"] and "1e-06" in low.summary
    high = curves.update_ratio(recorded(FITS, update_ratio=[0.1] * N), OPTIONS)
    assert high.causes == ["learning rate too high"]
    numbers = curves.judge(HEALTHY, OPTIONS, lambda *o: "train").numbers
    assert numbers["dead ReLU units (worst layer, last epoch)"] == "6.0%"
    assert numbers["update/weight ratio (median over epochs)"] == pytest.approx(1e-2 * 0.6**4.5, rel=0.3)
    # A run logged without activation statistics has no such columns: those rules stay silent.
    assert curves.dead_units(FITS, OPTIONS) is None and curves.saturated_units(FITS, OPTIONS) is None


def test_unit_fractions_see_dead_relus_and_saturated_tanh():
    from trainer_cli.models.stats import activation_values, unit_fractions

    torch.manual_seed(0)
    images = torch.randn(32, 1, 4, 4)
    relu = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        relu[1].bias[:6] = -100.0  # six of eight units can never fire
    fractions = unit_fractions(relu, activation_values(relu, images), 32)
    assert fractions == {"dead_fraction": {"2": 0.75}, "saturated_fraction": {}}
    tanh = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3), nn.Sigmoid())
    small = unit_fractions(tanh, activation_values(tanh, images), 32)["saturated_fraction"]
    with torch.no_grad():
        tanh[1].weight.mul_(1000.0)
        tanh[3].weight.mul_(1000.0)
    large = unit_fractions(tanh, activation_values(tanh, images), 32)["saturated_fraction"]
    assert small["2"] < 0.05 and large["2"] > 0.95 and large["4"] > 0.9


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
    from trainer_cli.cli_hydra import execute

    execute(make_cfg("epochs=3", "lr=1e-9", "logger=[]", "trainer.diagnose_at_end=true"), tmp_path)
    report = read_report(tmp_path)
    assert "## curves: FAIL" in report and "not going down" in report and "(curves.png)" in report
    assert (tmp_path / "curves.png").is_file()
    # The update/weight ratio the run recorded on its log cadence confirms the cause.
    ratio = float(curves.read_history(tmp_path)[-1]["update_ratio"])
    assert ratio < 1e-7 and "the update/weight ratio is" in report and "far from ~1e-3" in report


@pytest.mark.slow
def test_lr_auto_trains_with_the_range_tests_suggestion(make_cfg, tmp_path):
    from omegaconf import OmegaConf

    from trainer_cli.cli_hydra import execute
    from trainer_cli.diagnose.lr import range_test, suggest

    cfg = make_cfg("lr=auto", "epochs=1", "logger=[]")
    execute(cfg, tmp_path)
    recorded = OmegaConf.load(tmp_path / "resolved_config.yaml")
    expected = float(f"{suggest(*range_test(resolve(cfg), 1e-7, 10.0, 100)):.2g}")
    assert recorded.optimizer.lr == expected != 1e-3 and recorded.lr is None  # one value: optimizer.lr
    assert (tmp_path / "lr_range.png").is_file()


# grid and refine (the lecture's steps 4 and 5) --------------------------------------------
def test_the_refinement_trains_at_a_constant_lr_and_the_grid_keeps_the_schedule(make_cfg):
    """The schedule each grid point's run really builds: its LR after many steps."""
    from trainer_cli.diagnose.grid import point_config

    cfg = resolve(make_cfg("regularization=[dropout]"))  # cosine by default

    def lr_after(config, steps: int = 30) -> tuple[float, float]:
        pieces = build.pieces(config)
        for _ in range(steps):
            pieces.optimizer.step()
            pieces.scheduler.step()
        return pieces.scheduler.get_last_lr()[0], float(pieces.penalties()["l2"].detach()) if pieces.penalties else 0.0

    fine_lr, penalty = lr_after(point_config(cfg, 0.02, 1e-3, 2, constant_lr=True))
    coarse_lr, _ = lr_after(point_config(cfg, 0.02, 1e-3, 2, constant_lr=False))
    assert fine_lr == 0.02 and coarse_lr < 0.015 and penalty > 0  # the L2 penalty (in the loss) is on
    assert cfg.scheduler._target_.endswith("cosine") and "l2" not in (cfg.get("regularization") or {})


@pytest.mark.slow
def test_grid_and_refine_pick_the_region_where_the_answer_is_known(make_cfg, tmp_path):
    """SGD on digits: lr 1e-4 barely moves in one epoch, 100 diverges, 0.1 learns; an L2
    weight decay of 1 in the loss crushes the weights. The grid must pick (0.1, 0); the
    refinement, around it, trains each point at a constant LR."""
    summary = diagnose(
        make_cfg, tmp_path, "diagnose=grid", "optimizer=sgd", "lr=0.1", "mode.steps=[grid,refine]",
        "mode.grid_lr_factors=[1e-3,1,1e3]", "mode.grid_weight_decays=[1,0]", "mode.grid_epochs=1",
        "mode.refine_lr_factors=[0.5,1]", "mode.refine_epochs=2",
    )  # fmt: skip
    report = read_report(tmp_path)
    assert summary["diagnose/grid"] == "PASS", report
    grid_rows = {(r["lr"], r["regularization.l2.weight_decay"]): r for r in sweep_rows(tmp_path / "grid")}
    assert set(grid_rows) == {(lr, wd) for lr in ("0.0001", "0.1", "100") for wd in ("1", "0")}
    assert grid_rows[("100", "0")]["status"] == "failed"  # diverged, recorded as a failed job
    assert "best point lr 0.1, weight decay 0:" in report
    assert "train optimizer=sgd" not in report  # no Hydra record here: only the found values
    assert "Next:\n\n```\ntrain lr=0.1 diagnose=refine\n```" in report  # weight decay 0: no l2 to add
    assert (tmp_path / "grid" / "sweep.png").is_file() and (tmp_path / "grid" / "summary.csv").is_file()
    # refine: 0.05 and 0.1 at weight decay 0, each at a constant LR (the schedule the run used)
    refine_rows = sweep_rows(tmp_path / "refine")
    assert {(r["lr"], r["regularization.l2.weight_decay"]) for r in refine_rows} == {("0.05", "0"), ("0.1", "0")}
    for row in refine_rows:
        used = {float(epoch["lr"]) for epoch in curves.read_history(tmp_path / "refine" / row["job"])}
        assert used == {float(row["lr"])}
    assert "lr per epoch (best point): constant" in report and summary["diagnose/refine"] in ("PASS", "WARN")


def sweep_rows(folder):
    """The sweep report's rows, each with the values its job ran with (from its overrides)."""
    import csv

    with open(folder / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    return [{**row, **dict(o.split("=", 1) for o in row["overrides"].split())} for row in rows]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("rule", "overrides", "column"),
    [
        # tanh with N(0, 1) weights on 64 inputs: pre-activations of std ~8, 86% saturated
        ("saturated_units", ["model.activation=tanh", "model.init=normal", "model.init_std=1.0"], "saturated_fraction"),
        # SGD at lr=2 knocks most ReLUs of a layer off for good (87% dead) yet still learns
        ("dead_units", ["optimizer=sgd", "lr=2", "epochs=4"], "dead_fraction"),
        # weights of std 0.01 through 4 layers: the loss sits at ln C for two epochs, then drops
        ("plateau_then_drop", ["model.init=normal", "model.init_std=0.01", "model.depth=4", "model.width=64",
                               "epochs=8"], None),
    ],
)  # fmt: skip
def test_each_new_curve_rule_fires_on_a_run_with_its_pathology(make_cfg, tmp_path, rule, overrides, column):
    from trainer_cli.train import run

    run(make_cfg("logger=[]", "trainer.log_activations=true", "trainer.log_activations_every_n_steps=10", *overrides),
        tmp_path)  # fmt: skip
    recorded_history = curves.read_history(tmp_path)
    if column is not None:
        assert float(recorded_history[-1][column]) > 0.5
    assert rule in [f.rule for f in curves.findings(recorded_history, OPTIONS)]


def test_the_next_command_adds_l2_to_the_users_regularization(tmp_path):
    from trainer_cli.diagnose.context import Context
    from trainer_cli.diagnose.grid import regularization_overrides

    mine = Context(None, tmp_path, {}, None, ["'regularization=[dropout]'", "model.width=64"])
    assert regularization_overrides(mine, 1e-4) == [
        "'regularization=[dropout,l2]'",
        "regularization.l2.weight_decay=0.0001",
    ]
    assert mine.command("lr=0.01", *regularization_overrides(mine, 1e-5)) == (
        "train model.width=64 lr=0.01 'regularization=[dropout,l2]' regularization.l2.weight_decay=1e-05"
    )
    assert regularization_overrides(mine, 0.0) == []  # no decay: nothing to add
    with_l2 = Context(None, tmp_path, {}, None, ["'regularization=[l2]'"])
    assert regularization_overrides(with_l2, 0.0) == ["'regularization=[l2]'", "regularization.l2.weight_decay=0"]


def test_the_grids_put_a_constant_init_first(make_cfg, tmp_path):
    """No LR or weight decay breaks the symmetry of identical units: the grid steps say so
    rather than report a best point (constant init reached val acc 0.20 on digits)."""
    from trainer_cli.diagnose.context import Context
    from trainer_cli.diagnose.grid import symmetric

    verdict = symmetric(Context(resolve(make_cfg("model.init=constant")), tmp_path, {}), "grid", {}, "grid/sweep.png")
    assert verdict.status == "FAIL" and verdict.causes[0].startswith("bad initialization (units with identical")
    assert "model.init=default diagnose=all" in verdict.next_command
    assert symmetric(Context(resolve(make_cfg()), tmp_path, {}), "refine", {}, "refine/sweep.png") is None
