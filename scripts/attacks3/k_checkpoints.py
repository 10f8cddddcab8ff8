# ruff: noqa: E501
"""Class checkpoint: a run's checkpoint carries its config text; resume/evaluate/ensemble build
from it. Are the file rules (paths inside the current folder, no downloads) applied to it?"""

from __future__ import annotations

import torch
import yaml
from common import anything_in, contains_secret, copy_run, fresh, listing, report, train


def tampered(d, edit):
    """A copy of the fixture run whose checkpoints' config text is edited by `edit(dict)`."""
    run = copy_run(d / "run")
    for name in ("last.pt", "best.pt"):
        path = run / "checkpoints" / name
        if not path.is_file():
            continue
        state = torch.load(path, weights_only=True)
        cfg = yaml.safe_load(state["config"])
        edit(cfg)
        state["config"] = yaml.safe_dump(cfg)
        torch.save(state, path)
    return run


def r3_k01():
    """resume= a run whose checkpoint config adds an MLflow logger with tracking_uri=<outside>."""
    d = fresh("k01")
    victim = d / "victim"
    victim.mkdir()

    def edit(cfg):
        cfg["logger"] = {
            "mlflow": {"_target_": "trainer_cli.sinks.MLflow", "_partial_": True, "tracking_uri": f"{victim}/mlruns"}
        }

    run = tampered(d, edit)
    p = train([f"resume={run}", "epochs=2"], d, cheap=False)
    report(
        "R3-K01",
        "checkpoint",
        anything_in(victim),
        f"resume=<run> whose checkpoint config sets logger.mlflow.tracking_uri=<outside> [left: {listing(victim)}]",
        p,
    )


def r3_k02():
    """resume= a run whose checkpoint config says data=mnist, root=<outside>, download."""
    d = fresh("k02")
    victim = d / "victim"
    victim.mkdir()

    def edit(cfg):
        cfg["data"]["source"] = {
            "_target_": "trainer_cli.data.sources.load_mnist",
            "root": f"{victim}/mnist",
            "download": True,
        }

    run = tampered(d, edit)
    p = train([f"resume={run}", "epochs=2"], d, cheap=False, timeout=120)
    report(
        "R3-K02",
        "checkpoint",
        anything_in(victim),
        f"resume=<run> whose checkpoint config sets data.source (mnist) root=<outside>, download [left: {listing(victim)}]",
        p,
    )


def r3_k03():
    """mode=evaluate checkpoint=<run> whose checkpoint config has data root=<outside> + download."""
    d = fresh("k03")
    victim = d / "victim"
    victim.mkdir()

    def edit(cfg):
        cfg["data"]["source"] = {
            "_target_": "trainer_cli.data.sources.load_mnist",
            "root": f"{victim}/mnist",
            "download": True,
        }

    run = tampered(d, edit)
    p = train(["mode=evaluate", f"checkpoint={run}"], d, timeout=120)
    report(
        "R3-K03",
        "checkpoint",
        anything_in(victim),
        f"mode=evaluate checkpoint=<run> whose saved config has mnist root=<outside> [left: {listing(victim)}]",
        p,
    )


def r3_k04():
    """resume= a run whose checkpoint model is fcn_resnet50 (its default backbone downloads)."""
    d = fresh("k04")
    victim = d / "victim_torch_home"

    def edit(cfg):
        cfg["model"] = {"_target_": "torchvision.models.segmentation.fcn_resnet50", "num_classes": 10}

    run = tampered(d, edit)
    p = train([f"resume={run}", "epochs=2"], d, cheap=False, env={"TORCH_HOME": str(victim)}, timeout=120)
    report(
        "R3-K04",
        "checkpoint",
        victim.exists(),
        f"resume=<run> whose checkpoint model is fcn_resnet50 (download into $TORCH_HOME) [left: {listing(victim)}]",
        p,
    )


def r3_k05():
    """resume= a run whose checkpoint config reads ${oc.env:ATTACK_SECRET} (in data.name)."""
    d = fresh("k05")

    def edit(cfg):
        cfg["data"]["name"] = "${oc.env:ATTACK_SECRET}"

    run = tampered(d, edit)
    p = train([f"resume={run}", "epochs=2"], d, cheap=False)
    report(
        "R3-K05",
        "secret",
        bool(contains_secret(d)),
        "resume=<run> whose checkpoint config holds ${oc.env:ATTACK_SECRET}",
        p,
    )


def r3_k06():
    """ensemble=[<run>] whose checkpoint config has data root=<outside> + download."""
    d = fresh("k06")
    victim = d / "victim"
    victim.mkdir()

    def edit(cfg):
        cfg["data"]["source"] = {
            "_target_": "trainer_cli.data.sources.load_mnist",
            "root": f"{victim}/mnist",
            "download": True,
        }

    run = tampered(d, edit)
    p = train([f"ensemble=[{run}]"], d, timeout=120)
    report(
        "R3-K06",
        "checkpoint",
        anything_in(victim),
        f"ensemble=[<run>] whose saved config has mnist root=<outside> [left: {listing(victim)}]",
        p,
    )


def r3_k07():
    """mode=evaluate with a checkpoint config holding ${oc.decode:...} of an env read."""
    d = fresh("k07")

    def edit(cfg):
        cfg["data"]["name"] = "${oc.decode:'\"${oc.env:ATTACK_SECRET}\"'}"

    run = tampered(d, edit)
    p = train(["mode=evaluate", f"checkpoint={run}"], d)
    report(
        "R3-K07",
        "secret",
        bool(contains_secret(d)),
        "mode=evaluate, checkpoint config ${oc.decode:...oc.env:ATTACK_SECRET}",
        p,
    )


ATTEMPTS = [r3_k01, r3_k02, r3_k03, r3_k04, r3_k05, r3_k06, r3_k07]
