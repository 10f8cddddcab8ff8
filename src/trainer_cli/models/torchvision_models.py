"""Any torchvision classifier by name (`model=torchvision model.name=resnet18`), adapted to
the data: its class count, and its first layer to the data's input channels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from trainer_cli.models.init import initialize

if TYPE_CHECKING:
    import torchvision

# `import torchvision` happens inside the functions that build a torchvision model: it pulls in
# torch._dynamo (about half a tiny MLP run's start-up), which no other model needs.


def torchvision_model(
    name: str,
    in_channels: int,
    image_size: int,
    num_classes: int,
    weights: str | None = None,
    download: bool = True,
    dropout: float = 0.0,
    dropconnect: float = 0.0,
    init: str = "default",
    init_std: float = 0.01,
) -> nn.Module:
    """`torchvision.models.<name>` with `num_classes` outputs and `in_channels` inputs.

    Args:
        weights: None (random), a torchvision weights name (`IMAGENET1K_V1`, `DEFAULT`,
            `ResNet18_Weights.IMAGENET1K_V1`), or a local state_dict file (of the
            torchvision architecture as torchvision builds it, or of this adapted model).
            Pretrained heads are replaced by a fresh one for `num_classes`; a pretrained
            first conv on 1-channel input gets the sum of its RGB kernels (a grey image is
            R = G = B, so its first activations are unchanged).
        download: fetch named weights missing from torch's cache ($TORCH_HOME/hub/checkpoints);
            false: stop with the path to put the file at instead.
        init: re-initialize when no weights are loaded (`default` keeps torchvision's).
    """
    import torchvision

    classifiers = torchvision.models.list_models(module=torchvision.models)
    if name not in classifiers:
        raise ValueError(
            f"model.name: '{name}' is not a torchvision classifier; choose one of {', '.join(classifiers)}"
        )
    if dropout > 0 or dropconnect > 0:
        raise ValueError(
            "model.dropout, model.dropconnect: not available for model=torchvision "
            "(its architecture fixes its own dropout); use model=mlp, cnn or resnet"
        )
    if weights is None:
        model = torchvision.models.get_model(name, num_classes=num_classes)
        _adapt_input(model, in_channels, pretrained=False)
        initialize(model, init, "relu", init_std)
        return model
    if os.path.isfile(str(weights)):
        return _from_file(name, str(weights), in_channels, num_classes)
    if "/" in str(weights) or str(weights).endswith((".pt", ".pth")):
        raise ValueError(f"model.weights: no file at '{weights}'")
    model = torchvision.models.get_model(name, weights=_named_weights(name, str(weights), download))
    _replace_head(model, num_classes)
    _adapt_input(model, in_channels, pretrained=True)
    return model


def _named_weights(name: str, weights: str, download: bool) -> torchvision.models.WeightsEnum:
    """The weights enum member, after making sure its file is in torch's cache."""
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    member = weights.rsplit(".", 1)[-1]
    if member not in enum.__members__:
        accepted = ", ".join(enum.__members__)
        raise ValueError(
            f"model.weights: '{weights}' is not a weights name of {name}; choose {accepted} or a local file"
        )
    chosen = enum[member]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(chosen.url)
    if cached.is_file():
        return chosen
    where = f"download {chosen.url} to {cached}, or give a local file with model.weights=/path/to/weights.pth"
    if not download:
        raise ValueError(f"model.weights: {cached} is missing and model.download=false; {where}")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(chosen.url, str(cached), progress=False)
    except (OSError, RuntimeError) as error:  # URLError is an OSError: offline
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"model.weights: cannot download ({reason}); {where}") from None
    return chosen


def _from_file(name: str, path: str, in_channels: int, num_classes: int) -> nn.Module:
    """Weights from a local file: of this adapted model, or of torchvision's own layout."""
    import torchvision

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a trainer_cli checkpoint
    adapted = torchvision.models.get_model(name, num_classes=num_classes)
    _adapt_input(adapted, in_channels, pretrained=False)
    if _matches(adapted, state):
        adapted.load_state_dict(state)
        return adapted
    head_name, _ = _head(adapted)
    head_weight = state.get(f"{head_name}.weight")
    if head_weight is None:
        raise ValueError(f"model.weights: '{path}' has no '{head_name}.weight'; is it a {name} state_dict?")
    model = torchvision.models.get_model(name, num_classes=head_weight.shape[0])
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"model.weights: '{path}' does not fit {name}: {str(error).splitlines()[1].strip()}") from None
    _replace_head(model, num_classes)
    _adapt_input(model, in_channels, pretrained=True)
    return model


def _matches(model: nn.Module, state: dict) -> bool:
    own = model.state_dict()
    return own.keys() == state.keys() and all(own[k].shape == state[k].shape for k in own)


def _head(model: nn.Module) -> tuple[str, nn.Module]:
    """The classification layer: the last Linear (or 1x1 Conv2d, as in SqueezeNet)."""
    found = None
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            found = (module_name, module)
    assert found is not None
    return found


def _replace(model: nn.Module, module_name: str, new: nn.Module) -> None:
    parent_name, _, child = module_name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _replace_head(model: nn.Module, num_classes: int) -> None:
    head_name, head = _head(model)
    if isinstance(head, nn.Linear):
        new: nn.Module = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
    else:
        new = nn.Conv2d(head.in_channels, num_classes, head.kernel_size, head.stride, bias=head.bias is not None)
    _replace(model, head_name, new)


def _adapt_input(model: nn.Module, in_channels: int, pretrained: bool) -> None:
    """Give the first conv `in_channels` inputs (torchvision's models expect 3)."""
    first = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first[1].in_channels == in_channels:
        return
    conv_name, conv = first
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=conv.bias is not None,
    )  # fmt: skip
    if pretrained and in_channels == 1:
        with torch.no_grad():
            new.weight.copy_(conv.weight.sum(1, keepdim=True))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    _replace(model, conv_name, new)
