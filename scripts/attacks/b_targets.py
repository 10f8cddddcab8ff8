# ruff: noqa: E501, SIM115
"""Class target: what a config may build (trust by object, not module), resolvers, partials."""

from __future__ import annotations

from common import fresh, payload, report, train, write


def exp(folder, body: str):
    write(folder / "cfg" / "experiment" / "x.yaml", "# @package _global_\n" + body)
    return ["--config-dir", str(folder / "cfg"), "experiment=x"]


def b01():
    d = fresh("b01")
    victim = write(d / "victim" / "notes.txt", "precious\n")
    args = exp(
        d,
        f"""\
model:
  width:
    _target_: logging.FileHandler
    filename: {victim}
    mode: w
""",
    )
    p = train(args, d)
    report(
        "B01",
        "target",
        victim.read_text() != "precious\n",
        "experiment builds logging.FileHandler(filename=<outside>, mode=w) nested in model.width: truncates a file outside",
        p,
    )


def b02():
    d = fresh("b02")
    out = d / "victim" / "created.log"
    (d / "victim").mkdir()
    args = exp(
        d,
        f"""\
callbacks:
  evil:
    _target_: logging.FileHandler
    filename: {out}
""",
    )
    p = train(args, d)
    report(
        "B02",
        "target",
        out.exists(),
        "experiment adds a `callbacks.evil` logging.FileHandler: creates a file outside",
        p,
    )


def b03():
    d = fresh("b03")
    mark = d / "MARK"
    args = exp(
        d,
        f"""\
model:
  _target_: torch.os.system
  _args_: ["touch {mark}"]
""",
    )
    p = train(args, d)
    report("B03", "target", mark.exists(), "model._target_ torch.os.system (alias of posix.system)", p)


def b04():
    d = fresh("b04")
    mark = d / "MARK"
    args = exp(
        d,
        f"""\
model:
  _target_: ${{oc.decode:'"builtins.exec"'}}
  _args_: ["{payload(mark).strip()}"]
""",
    )
    p = train(args, d)
    report("B04", "target", mark.exists(), "model._target_ from ${oc.decode:...} -> builtins.exec", p)


def b05():
    d = fresh("b05")
    mark = d / "MARK"
    args = exp(
        d,
        f"""\
model:
  width:
    _target_: torch.nn.modules.module.Module.register_forward_hook
    _args_: []
  extra: {{_target_: torch.serialization.load, f: {mark}}}
""",
    )
    p = train(args, d)
    report(
        "B05",
        "target",
        mark.exists(),
        "unbound method of an allowed kind (Module.register_forward_hook), torch.serialization.load",
        p,
    )


def b06():
    d = fresh("b06")
    victim = d / "victim"
    victim.mkdir()
    args = exp(
        d,
        f"""\
mode:
  _target_: trainer_cli.train.run
  _partial_: true
  run_dir: {victim}
""",
    )
    p = train(args, d)
    report(
        "B06",
        "target",
        any(victim.iterdir()),
        "mode partial binds run_dir=<outside> (procedure called with the config's folder?)",
        p,
    )


def b07():
    d = fresh("b07")
    victim = d / "victim"
    victim.mkdir()
    args = exp(
        d,
        f"""\
defaults:
  - override /logger: [csv]
logger:
  csv:
    run_dir: {victim}
""",
    )
    p = (
        train(args, d, cheap=False)
        if False
        else train([*args, "epochs=1", "trainer.limit_train_batches=2", "trainer.device=cpu"], d, cheap=False)
    )
    report("B07", "target", any(victim.iterdir()), "logger.csv partial binds run_dir=<outside>", p)


def b08():
    d = fresh("b08")
    victim = d / "victim"
    args = exp(
        d,
        f"""\
defaults:
  - override /logger: [mlflow]
logger:
  mlflow:
    tracking_uri: {victim}/mlruns
""",
    )
    p = train([*args, "epochs=1", "trainer.limit_train_batches=2", "trainer.device=cpu"], d, cheap=False)
    report(
        "B08",
        "target",
        (victim / "mlruns").exists(),
        "experiment sets logger.mlflow.tracking_uri to an absolute folder outside",
        p,
    )


def b09():
    d = fresh("b09")
    home = d / "torchhome"
    args = exp(
        d,
        """\
model:
  width:
    _target_: torchvision.models.resnet.resnet18
    weights: IMAGENET1K_V1
""",
    )
    p = train(args, d, env={"TORCH_HOME": str(home)})
    report(
        "B09",
        "target",
        home.exists(),
        "torchvision builder with weights=IMAGENET1K_V1 (download: network + writes under TORCH_HOME)",
        p,
    )


def b10():
    d = fresh("b10")
    mark = d / "MARK"
    args = exp(
        d,
        """\
model:
  width:
    _target_: torchvision.transforms.v2.Compose
    transforms:
      - _target_: torch.optim.lr_scheduler.LambdaLR
        optimizer: null
        lr_lambda: null
  w2: {_target_: torchvision.transforms.v2._misc.Lambda, lambd: null}
""",
    )
    p = train(args, d)
    report("B10", "target", mark.exists(), "excluded kinds by private path (LambdaLR, transforms.v2._misc.Lambda)", p)


def b11():
    d = fresh("b11")
    mark = d / "MARK"
    args = exp(
        d,
        f"""\
model:
  width:
    _target_: hydra.utils.instantiate
    config: {{_target_: builtins.exec, _args_: ["{payload(mark).strip()}"]}}
""",
    )
    p = train(args, d)
    report("B11", "target", mark.exists(), "hydra.utils.instantiate as a target (an instantiate inside)", p)


def b12():
    d = fresh("b12")
    mark = d / "MARK"
    args = exp(
        d,
        """\
model:
  width:
    _target_: torch.nn.modules.module.Module
    _recursive_: false
    _convert_: object
  hook: {_target_: logging.config.dictConfig, config: {version: 1}}
""",
    )
    p = train(args, d)
    report("B12", "target", mark.exists(), "logging.config.dictConfig under the trusted 'logging' root", p)


ATTEMPTS = [b01, b02, b03, b04, b05, b06, b07, b08, b09, b10, b11, b12]
