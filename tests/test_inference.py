"""What to do with a trained model: mode=evaluate, mode=predict, mode=export, on a run
trained once, in-process, on digits."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer_cli import build
from trainer_cli.config import UserError, resolve


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A one-epoch digits run (its metrics.json and checkpoints), trained with `train`'s own run()."""
    from hydra import compose, initialize_config_dir

    from trainer_cli.config import CONF_DIR, register_resolvers
    from trainer_cli.train import run

    register_resolvers()
    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["epochs=1", "trainer.device=cpu", "logger=[none]"])
    run_dir = tmp_path_factory.mktemp("run")
    summary = run(cfg, run_dir)
    return run_dir, summary


def procedure_run(make_cfg, tmp_path, *overrides):
    """A mode's procedure, called as `train` calls it (build.procedure(cfg)(cfg, run_dir))."""
    cfg = resolve(make_cfg(*overrides))
    return build.procedure(cfg)(cfg, tmp_path / "out")


def test_evaluate_reproduces_the_runs_test_accuracy(finished_run, make_cfg, tmp_path):
    run_dir, trained = finished_run
    summary = procedure_run(make_cfg, tmp_path, "mode=evaluate", f"checkpoint={run_dir}")
    assert summary["test/acc"] == trained["test/acc"] and summary["test/loss"] == trained["test/loss"]
    out = tmp_path / "out"
    with open(out / "confusion_matrix.csv") as f:
        rows = list(csv.reader(f))[1:]
    counts = np.array([[int(v) for v in row[1:]] for row in rows])
    assert counts.shape == (10, 10) and counts.sum() == summary["test/num_samples"] == 360
    assert np.trace(counts) / counts.sum() == pytest.approx(summary["test/acc"], abs=1e-12)
    per_class = summary["test/per_class_acc"]
    assert per_class["3"] == pytest.approx(counts[3, 3] / counts[3].sum())
    assert (out / "confusion_matrix.png").stat().st_size > 10_000
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))  # the default logger: the image tab
    assert json.loads((out / "evaluation.json").read_text())["test/acc"] == trained["test/acc"]


@pytest.mark.slow
def test_evaluate_on_another_data_set(finished_run, make_cfg, tmp_path):
    run_dir, _ = finished_run
    cfg = resolve(make_cfg("mode=evaluate", f"checkpoint={run_dir}/checkpoints/best.pt", "data=synthetic"))
    summary = build.procedure(cfg)(cfg, tmp_path / "out", user_keys={"data"})  # as `train ... data=synthetic`
    assert summary["data"] == "synthetic" and summary["test/num_samples"] == 512
    assert summary["test/acc"] < 0.5  # random images: the digits model is lost there


def test_predict_image_folder_and_tensor_file(finished_run, make_cfg, tmp_path):
    from PIL import Image

    from trainer_cli.data.sources import load_digits

    run_dir, _ = finished_run
    digits = load_digits()
    images, labels = digits.test_x[:20], digits.test_y[:20]
    torch.save(images, tmp_path / "images.pt")
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images[:5]):
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8), mode="L").save(folder / f"{i:02d}.png")
    summary = procedure_run(
        make_cfg, tmp_path, "mode=predict", f"checkpoint={run_dir}", f"mode.input={tmp_path}/images.pt"
    )
    with open(summary["predictions"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and rows[0]["input"] == "0"
    predicted = torch.tensor([int(r["predicted_index"]) for r in rows])
    assert (predicted == labels).float().mean() > 0.7  # the one-epoch model is right on most
    assert sum(float(rows[0][f"p_{c}"]) for c in range(10)) == pytest.approx(1.0, abs=1e-4)
    out = tmp_path / "from_folder.csv"
    procedure_run(
        make_cfg, tmp_path, "mode=predict", f"checkpoint={run_dir}", f"mode.input={folder}", f"mode.output={out}"
    )
    with open(out) as f:
        from_folder = list(csv.DictReader(f))
    assert [r["input"] for r in from_folder] == [f"{i:02d}.png" for i in range(5)]
    # The PNGs hold the same pixels (to 1/255): the same classes as from the tensor file.
    assert [r["predicted"] for r in from_folder] == [r["predicted"] for r in rows[:5]]


@pytest.mark.slow
def test_predict_refuses_inputs_of_the_wrong_shape(finished_run, make_cfg, tmp_path):
    run_dir, _ = finished_run
    torch.save(torch.rand(4, 3, 8, 8), tmp_path / "rgb.pt")
    with pytest.raises(UserError, match=r"^mode\.input: .* has shape \(4, 3, 8, 8\); the model takes \(N, 1, 8, 8\)"):
        procedure_run(make_cfg, tmp_path, "mode=predict", f"checkpoint={run_dir}", f"mode.input={tmp_path}/rgb.pt")
    assert not (tmp_path / "out" / "predictions.csv").exists()
    with pytest.raises(UserError, match=r"^checkpoint: .* is neither a run folder nor a checkpoint file"):
        procedure_run(make_cfg, tmp_path, "mode=evaluate", f"checkpoint={tmp_path}/nothing.pt")


@pytest.mark.slow  # torch.export and the dynamo ONNX exporter: seconds each
def test_export_torch_export_torchscript_and_onnx_match_pytorch(finished_run, make_cfg, tmp_path):
    run_dir, _ = finished_run
    formats = "[torch_export,torchscript,onnx]"
    try:
        import onnxruntime
    except ImportError:
        onnxruntime, formats = None, "[torch_export,torchscript]"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = procedure_run(make_cfg, tmp_path, "mode=export", f"checkpoint={run_dir}", f"mode.formats={formats}")
    # Issue 23: no FutureWarning about torch.jit.trace reaches the user.
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    from trainer_cli.data.sources import load_digits
    from trainer_cli.inference import from_checkpoint

    images = load_digits().test_x[:7]  # raw pixels in [0, 1]: preprocessing is inside the export
    trained = from_checkpoint(resolve(make_cfg()), run_dir, with_data=False)
    with torch.no_grad():
        expected = trained.model(trained.preprocess(images))
    scripted = torch.jit.load(summary["exported"]["torchscript"])
    torch.testing.assert_close(scripted(images), expected)
    program = torch.export.load(summary["exported"]["torch_export"]).module()
    torch.testing.assert_close(program(images), expected)  # 7 images: the batch size is free
    if onnxruntime is None:
        pytest.skip("onnxruntime not installed (pip install 'trainer_cli[onnx]'): only TorchScript checked")
    session = onnxruntime.InferenceSession(summary["exported"]["onnx"], providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": images.numpy()})
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)
    assert Path(summary["exported"]["onnx"]).stat().st_size > 1000
