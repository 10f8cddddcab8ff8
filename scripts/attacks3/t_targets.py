# ruff: noqa: E501
"""Class target: what a config may build: listed objects with harmful defaults or arguments,
positional arguments the door does not look at, resolvers that make nodes."""

from __future__ import annotations

from common import anything_in, exp, fresh, listing, payload, report, train, write


def r3_t01():
    """A registered torchvision builder whose *default* weights_backbone downloads (fcn_resnet50):
    the door refuses only an explicit `weights`/`weights_backbone` key."""
    d = fresh("t01")
    victim = d / "victim_torch_home"
    args = exp(
        d,
        """\
model:
  _target_: torchvision.models.segmentation.fcn_resnet50
  num_classes: 10
""",
    )
    p = train(args, d, env={"TORCH_HOME": str(victim)}, timeout=120)
    report(
        "R3-T01",
        "target",
        anything_in(victim) or victim.exists(),
        f"model fcn_resnet50 (default weights_backbone=IMAGENET1K_V1): download into $TORCH_HOME [left: {listing(victim)}]",
        p,
    )


def r3_t02():
    """A detection builder (default weights_backbone) nested as a callback, not the model."""
    d = fresh("t02")
    victim = d / "victim_torch_home"
    args = exp(
        d,
        """\
callbacks:
  det:
    _target_: torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn
    num_classes: 3
""",
    )
    p = train(args, d, env={"TORCH_HOME": str(victim)}, timeout=120)
    report(
        "R3-T02",
        "target",
        victim.exists(),
        f"callbacks.det = fasterrcnn_mobilenet_v3_large_320_fpn (default backbone weights download) [left: {listing(victim)}]",
        p,
    )


def r3_t03():
    """A PARTIAL_ONLY writer with its folder bound positionally (`_args_`), not as `run_dir`."""
    d = fresh("t03")
    victim = d / "victim"
    victim.mkdir()
    args = exp(
        d,
        f"""\
logger:
  csv2:
    _target_: trainer_cli.sinks.CSVLogger
    _partial_: true
    _args_: [{victim}]
""",
    )
    p = train(args, d)
    report(
        "R3-T03",
        "target",
        anything_in(victim),
        f"logger.csv2 CSVLogger partial with _args_: [<outside>] (positional run_dir) [left: {listing(victim)}]",
        p,
    )


def r3_t04():
    """A whole node made by ${oc.create:...} naming builtins.exec (resolved before the check?)."""
    d = fresh("t04")
    mark = d / "MARK"
    args = exp(
        d,
        f"""\
callbacks:
  evil: "${{oc.create:'{{_target_: posix.system, _args_: [touch {mark}]}}'}}"
""",
    )
    p = train(args, d)
    report(
        "R3-T04",
        "target",
        mark.exists(),
        "callbacks.evil = ${oc.create:{_target_: posix.system, _args_: [touch MARK]}} (node made by a resolver)",
        p,
    )


def r3_t05():
    """`_target_` reached through a listed class's attribute path (a module object inside it)."""
    d = fresh("t05")
    mark = d / "MARK"
    args = exp(
        d,
        f"""\
callbacks:
  evil:
    _target_: trainer_cli.sinks.os.system
    _args_: ["touch {mark}"]
  evil2:
    _target_: torch.optim.Adam.__init__.__globals__
""",
    )
    p = train(args, d)
    report("R3-T05", "target", mark.exists(), "targets trainer_cli.sinks.os.system / a __globals__ path", p)


def r3_t06():
    """A listed procedure (run_export) as a nested partial inside a listed transform's callable
    argument (SanitizeBoundingBoxes.labels_getter), called by torchvision later."""
    d = fresh("t06")
    victim = d / "victim"
    victim.mkdir()
    args = exp(
        d,
        """\
callbacks:
  sbb:
    _target_: torchvision.transforms.v2.SanitizeBoundingBoxes
    labels_getter:
      _target_: trainer_cli.inference.run_export
      _partial_: true
""",
    )
    p = train(args, d)
    # Success would need torchvision to call it with a folder; record whether the node is accepted at all.
    accepted = p.returncode == 0
    report(
        "R3-T06",
        "target",
        False,
        f"partial run_export as SanitizeBoundingBoxes.labels_getter (accepted={accepted}; nothing calls it with a folder)",
        p,
    )


def r3_t07():
    """A Hydra plugin class on the list (JoblibLauncher) built as a model-level node with
    arguments that reach joblib (backend / prefer) — the launcher built outside Hydra."""
    d = fresh("t07")
    mark = d / "MARK"
    write(d / "evilbackend.py", payload(mark))
    args = exp(
        d,
        """\
callbacks:
  jl:
    _target_: hydra_plugins.trainer_cli_launchers.JoblibLauncher
    n_jobs: 2
    backend: evilbackend
""",
    )
    p = train(args, d)
    report(
        "R3-T07",
        "target",
        mark.exists(),
        "callbacks.jl = JoblibLauncher(backend=<cwd module>) built as a plain node",
        p,
    )


ATTEMPTS = [r3_t01, r3_t02, r3_t03, r3_t04, r3_t05, r3_t06, r3_t07]
