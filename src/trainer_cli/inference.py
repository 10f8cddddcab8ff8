"""What to do with a trained model: `mode=evaluate`, `mode=predict`, `mode=export`.

Each procedure rebuilds the run from its checkpoint (`checkpoint=<run folder | .pt>`): the
config saved inside it names the data and the model, the saved preprocessing statistics and
weights are restored (the same steps as `resume`, through `build`), and nothing trains.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainer_cli import build, checkpoint, metrics, run_folder, trust
from trainer_cli.config import UserError, resolved, with_facts
from trainer_cli.data import Data
from trainer_cli.data.preprocess import Preprocess

log = logging.getLogger("trainer_cli")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class Trained:
    """A finished run rebuilt from one checkpoint: its config, data, model and device."""

    cfg: DictConfig
    data: Data
    model: nn.Module
    device: torch.device
    precision: str
    path: Path
    preprocess: Preprocess
    classes: list[str]


def checkpoint_path(given: Any) -> Path:
    """`checkpoint=`: a run folder (the rule of run_folder.trained_weights) or a .pt file."""
    if not given:
        raise UserError("checkpoint: give a run folder or a .pt file, e.g. checkpoint=outputs/<date>/<run>")
    return run_folder.trained_weights(given)


def data_from_command_line(user_keys: set[str] | None) -> bool:
    """Whether this command line chose the data (`data=...` or `data.<key>=...`)."""
    keys = user_keys or set()
    return any(k == "data" or (k.startswith("data.") and k not in ("data.kfold", "data.fold")) for k in keys)


@torch.no_grad()
def from_checkpoint(
    cfg: DictConfig, checkpoint: Any, user_keys: set[str] | None = None, *, with_data: bool = True
) -> Trained:
    """The mode's `checkpoint` (a run folder or a .pt) as a trained model on `cfg.trainer.device`,
    with its own data (or the command line's `data=`, seen through the run's own preprocessing)."""
    data = cfg.data if data_from_command_line(user_keys) else None
    return rebuild(checkpoint, build.device(str(cfg.trainer.device)), data=data, with_data=with_data)


@torch.no_grad()
def rebuild(
    given: Any, device: torch.device, *, data: DictConfig | None = None, with_data: bool = True, key: str = "checkpoint"
) -> Trained:
    """A finished run's trained model, rebuilt from a run folder (run_folder.trained_weights's
    rule) or a checkpoint file: the saved config (it passes the trust check: a checkpoint's
    config is code too), the model in the structure it was saved in (its `finetune`: a
    probe on an early stage stays one), its weights and preprocessing statistics; with
    `with_data`, its data (or `data`, another data set's config). Evaluate, predict, export
    and ensembles all use it."""
    if not given:
        raise UserError(f"{key}: give a run folder or a .pt file, e.g. {key}=outputs/<date>/<run>")
    path = run_folder.trained_weights(given, key=key)
    try:
        state = checkpoint.load_run(path, map_location=device)
    except UserError as error:
        raise UserError(f"{key}{str(error).removeprefix('resume')}") from None
    saved = OmegaConf.create(state["config"])
    trust.check_no_widening(saved)  # built through build's trust door, like any config
    # A new config from the saved one: this rebuilt copy's device (not the run's), and the
    # command line's data when it chose one.
    fixed = trust.saved_config_changes(saved, str(path))  # a shared run's config fetches nothing
    saved = with_facts(saved, {**fixed, "trainer.device": str(device), **({"data": data} if data is not None else {})})
    run_data, preprocess = None, Preprocess("none")
    if with_data:
        run_data = build.data(saved, device)
        preprocess = run_data.preprocess
    preprocess.load_state_dict(state["preprocess"])
    classes = run_data.classes if run_data is not None else class_names(saved)
    shape = (int(saved.data.in_channels), int(saved.data.image_size), int(saved.data.image_size))
    model = build.finetune(saved).saved_structure(build.model(saved), shape).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return Trained(saved, run_data, model, device, str(saved.trainer.precision), path, preprocess, classes)


def class_names(cfg: DictConfig) -> list[str]:
    """The class names of the run's data source (their indices when it cannot be read here)."""
    try:
        return [str(c) for c in build.instantiate(cfg.data.source, key="data.source").classes]
    except Exception:
        return [str(i) for i in range(int(cfg.data.num_classes))]


@torch.no_grad()
def predictions(trained: Trained, batches: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(class probabilities, labels) over `batches`, with the run's precision."""
    from trainer_cli.loop import autocast

    probs, labels = [], []
    for images, targets in batches:
        with autocast(trained.device, trained.precision):
            logits = trained.model(images)
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(targets.cpu())
    return torch.cat(probs), torch.cat(labels)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[true, predicted]."""
    flat = labels * num_classes + predicted
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


def confusion_figure(counts: torch.Tensor, classes: list[str], path: Path, title: str) -> torch.Tensor:
    """The confusion matrix as a PNG (rows: true class, columns: predicted; each row
    normalized, counts written in the cells); returns the image as a (3, H, W) tensor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(classes)
    rates = counts.double() / counts.sum(1, keepdim=True).clamp_min(1)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    shown = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(n), classes, rotation=90 if n > 10 or max(map(len, classes)) > 3 else 0)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                value = int(counts[i, j])
                colour = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, str(value), ha="center", va="center", fontsize=8, color=colour)
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    path.parent.mkdir(parents=True, exist_ok=True)
    from trainer_cli.figures import save

    save(fig, path)
    plt.close(fig)
    return torch.from_numpy(image).permute(2, 0, 1)


def run_evaluate(
    cfg: DictConfig,
    run_dir: Path,
    hparams: dict[str, Any] | None = None,
    user_keys: set[str] | None = None,
    checkpoint: Any = None,
) -> dict[str, Any]:
    """`train mode=evaluate checkpoint=<run | .pt>`: the test metrics of a checkpoint (computed
    as the run's own final evaluation computes them), its confusion matrix (PNG, CSV and
    TensorBoard) and each class's accuracy, on the run's test split or the command line's `data=`."""
    from trainer_cli.loop import evaluate
    from trainer_cli.report import Reporter, per_class_table

    cfg = resolved(cfg)
    trained = from_checkpoint(cfg, checkpoint, user_keys)
    data = trained.data
    # The run's own loss, as its final evaluation computed test/loss (hinge for a loss=hinge run).
    tested = evaluate(trained.model, data.test, trained.device, trained.precision, build.loss(trained.cfg))
    probs, labels = predictions(trained, data.test)
    counts = confusion_matrix(probs.argmax(1), labels, data.num_classes)
    per_class = {
        name: float(counts[i, i] / counts[i].sum()) if counts[i].sum() else float("nan")
        for i, name in enumerate(data.classes)
    }
    summary = {
        "status": "ok",
        "run_dir": str(run_dir),
        "checkpoint": str(trained.path),
        "data": str(trained.cfg.data.name),
        metrics.key("test", "acc"): tested["acc"],
        metrics.key("test", "loss"): tested["loss"],
        "test/num_samples": int(labels.numel()),
        "test/per_class_acc": per_class,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "confusion_matrix.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *data.classes])
        writer.writerows([name, *map(int, row)] for name, row in zip(data.classes, counts, strict=True))
    title = f"{trained.cfg.data.name} test: acc {tested['acc']:.4f} ({labels.numel()} images)"
    image = confusion_figure(counts, data.classes, run_dir / "confusion_matrix.png", title)
    with Reporter(run_dir, build.loggers(cfg, run_dir)) as reporter:
        reporter.log_scalars(0, {k: v for k, v in summary.items() if isinstance(v, float)})
        reporter.log_image("test/confusion_matrix", image, 0)
        reporter.finish(summary, {"checkpoint": str(trained.path), "data": summary["data"]}, {})
        reporter.print(per_class_table(summary))
        log.info(f"checkpoint: {trained.path}")  # its own line: a table title would wrap the path
    (run_dir / "evaluation.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info(f"confusion matrix: {run_dir / 'confusion_matrix.png'} (and TensorBoard's Images tab)")
    return summary


def read_inputs(given: Any, channels: int, size: int) -> tuple[torch.Tensor, list[str]]:
    """Images in [0, 1], shape (N, channels, size, size), and a name for each: from a folder
    of image files (resized and centre-cropped as image-folder data sets are) or a tensor
    file (.pt tensor or .npy array, (N, C, H, W) or (N, H, W); uint8 pixels are scaled to [0, 1])."""
    import numpy as np

    if not given:
        raise UserError("mode.input: give an image folder or a tensor file (.pt, .npy), e.g. mode.input=images/")
    path = Path(str(given))
    if path.is_dir():
        from PIL import Image
        from torchvision.transforms import v2

        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"mode.input: '{given}' holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        transform = v2.Compose(
            [v2.ToImage(), v2.Resize(size, antialias=True), v2.CenterCrop(size), v2.ToDtype(torch.float32, scale=True)]
        )
        mode = "L" if channels == 1 else "RGB"
        images = []
        for f in files:
            try:
                images.append(transform(Image.open(f).convert(mode)))
            except (OSError, ValueError) as error:  # not an image (PIL.UnidentifiedImageError is an OSError)
                raise UserError(f"mode.input: '{f}' is not a readable image ({type(error).__name__})") from None
        return torch.stack(images), [str(f.relative_to(path)) for f in files]
    if path.suffix == ".pt" and path.is_file():
        try:
            images = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise UserError(f"mode.input: cannot read '{given}' ({str(error).splitlines()[0][:120]})") from None
    elif path.suffix == ".npy" and path.is_file():
        try:  # never unpickled: an array of Python objects is refused
            images = torch.from_numpy(np.load(path, allow_pickle=False))
        except (ValueError, TypeError, OSError) as error:
            raise UserError(f"mode.input: cannot read '{given}' ({str(error).splitlines()[0][:120]})") from None
    else:
        raise UserError(f"mode.input: '{given}' is not an image folder, a .pt or a .npy file")
    if not isinstance(images, torch.Tensor):
        raise UserError(f"mode.input: '{given}' holds a {type(images).__name__}, not a tensor of images")
    if images.dtype == torch.uint8:
        images = images.float() / 255
    if images.ndim == 3 and channels == 1:
        images = images.unsqueeze(1)
    if images.ndim != 4 or tuple(images.shape[1:]) != (channels, size, size):
        raise UserError(
            f"mode.input: '{given}' has shape {tuple(images.shape)}; the model takes (N, {channels}, {size}, {size})"
        )
    return images.float(), [str(i) for i in range(images.shape[0])]


def write_atomically(path: Path, rows: list[list[Any]]) -> None:
    """A CSV written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            csv.writer(f).writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run_predict(
    cfg: DictConfig,
    run_dir: Path,
    hparams: dict[str, Any] | None = None,
    user_keys: set[str] | None = None,
    checkpoint: Any = None,
    input: Any = None,
    output: str | None = None,
) -> dict[str, Any]:
    """`train mode=predict checkpoint=<run | .pt> mode.input=<image folder | .pt | .npy>`:
    each input's predicted class and class probabilities, in `predictions.csv` (or `mode.output`)."""
    cfg = resolved(cfg)
    trained = from_checkpoint(cfg, checkpoint, with_data=False)
    preprocess, classes = trained.preprocess, trained.classes
    channels, size = int(trained.cfg.data.in_channels), int(trained.cfg.data.image_size)
    images, names = read_inputs(input, channels, size)
    batch = int(cfg.batch_size)
    parts = []
    for start in range(0, len(images), batch):
        chunk = preprocess(images[start : start + batch].to(trained.device))
        parts.append((chunk, torch.zeros(chunk.shape[0], dtype=torch.long)))
    probs, _ = predictions(trained, parts)
    predicted = probs.argmax(1)
    path = Path(output) if output else run_dir / "predictions.csv"
    rows: list[list[Any]] = [["input", "predicted", "predicted_index", "probability", *[f"p_{c}" for c in classes]]]
    for name, index, row in zip(names, predicted.tolist(), probs.tolist(), strict=True):
        rows.append([name, classes[index], index, f"{row[index]:.6f}", *[f"{p:.6f}" for p in row]])
    write_atomically(path, rows)
    log.info(f"predictions for {len(names)} inputs: {path}")
    summary = {"status": "ok", "run_dir": str(run_dir), "checkpoint": str(trained.path), "predictions": str(path)}
    summary["count"] = len(names)
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Any:
    """The ONNX exporter's optimizer passes log each step at INFO (to our console): warnings only."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# torch_export and onnx by default (conf/mode/export.yaml); torchscript for LibTorch (C++) users.
EXPORT_FORMATS = ("torch_export", "onnx", "torchscript")


class Exported(nn.Module):
    """The model with the run's preprocessing in front: it takes images in [0, 1], as the
    data sets give them, and returns logits."""

    def __init__(self, model: nn.Module, preprocess: Preprocess) -> None:
        super().__init__()
        self.model, self.preprocess = model, preprocess

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(images))


def run_export(
    cfg: DictConfig,
    run_dir: Path,
    hparams: dict[str, Any] | None = None,
    user_keys: set[str] | None = None,
    checkpoint: Any = None,
    formats: Any = ("torch_export", "onnx"),
) -> dict[str, Any]:
    """`train mode=export checkpoint=<run | .pt>`: `model.pt2` (`torch.export`; load it with
    `torch.export.load(path).module()`) and `model.onnx` (the same exported program through
    torch's dynamo ONNX exporter; needs `pip install trainer_cli[onnx]`), each taking images in
    [0, 1] of shape (N, C, H, W), any N, with the run's preprocessing inside, and returning logits.
    `torchscript` (`model.torchscript.pt`, for LibTorch in C++) is still on offer, but torch
    deprecates `torch.jit.trace`: only when asked for, its warnings silenced."""
    cfg = resolved(cfg)
    chosen = [str(f) for f in formats]
    unknown = [f for f in chosen if f not in EXPORT_FORMATS]
    if unknown:
        raise UserError(f"mode.formats: '{unknown[0]}' is not accepted; choose {', '.join(EXPORT_FORMATS)}")
    if "onnx" in chosen and importlib.util.find_spec("onnx") is None:
        raise UserError("mode.formats: onnx needs the onnx package; pip install 'trainer_cli[onnx]'")
    trained = from_checkpoint(cfg, checkpoint, with_data=False)
    trained.model.to("cpu")
    exported = Exported(trained.model, trained.preprocess).eval()
    channels, size = int(trained.cfg.data.in_channels), int(trained.cfg.data.image_size)
    example = torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(0))
    run_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    if "torch_export" in chosen or "onnx" in chosen:
        program = torch.export.export(exported, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        if "torch_export" in chosen:
            torch.export.save(program, str(run_dir / "model.pt2"))
            written["torch_export"] = str(run_dir / "model.pt2")
        if "onnx" in chosen:
            path = run_dir / "model.onnx"
            with contextlib.redirect_stdout(io.StringIO()), quiet_loggers("onnxscript", "onnx_ir"):
                torch.onnx.export(program, (example,), str(path), input_names=["images"], output_names=["logits"],
                                  dynamo=True, external_data=False, verbose=False)  # fmt: skip
            written["onnx"] = str(path)
    if "torchscript" in chosen:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # asked for by name: no deprecation notice twice
            traced = torch.jit.trace(exported, example)
        traced.save(str(run_dir / "model.torchscript.pt"))
        written["torchscript"] = str(run_dir / "model.torchscript.pt")
    for name, path in written.items():
        log.info(f"{name}: {path}")
    summary = {"status": "ok", "run_dir": str(run_dir), "checkpoint": str(trained.path), "exported": written}
    summary["input_shape"] = ["N", channels, size, size]
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
