"""The causes a diagnosis may name, defined once: a stable name (the zoo's labels, the
verdicts' keys), the lecture's words, and the overrides that test the cause next."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    """One cause: the lecture's words for it and the command-line change that tests it."""

    words: str
    next_overrides: tuple[str, ...] = ()


HEALTHY = "healthy"
CAUSES: dict[str, Cause] = {
    HEALTHY: Cause("no pathology: the loss goes down, training and validation agree"),
    "lr_too_high": Cause("learning rate too high", ("lr=<lr/10>",)),
    "lr_too_low": Cause("learning rate too low", ("lr=<10x lr>",)),
    "init_too_large": Cause("initialization scale too large: the logits are not small", ("model.init=default",)),
    "init_too_small": Cause(
        "initialization scale too small: the signal and the gradient vanish at first", ("model.init=kaiming_normal",)
    ),
    "init_constant": Cause(
        "constant initialization: every unit of a layer computes the same (no symmetry breaking)",
        ("model.init=default",),
    ),
    "inputs_not_preprocessed": Cause(
        "inputs not preprocessed: the batch at the model's input is far from zero mean and unit scale",
        ("data.preprocess=channel_mean_std",),
    ),
    "l2_too_strong": Cause(
        "regularization too strong: the L2 penalty dominates the objective", ("regularization.l2.weight_decay=<w/10>",)
    ),
    "dropout_too_strong": Cause(
        "dropout too strong: the model fits in eval mode what it cannot in train mode", ("model.dropout=<p/2>",)
    ),
    "label_errors": Cause(
        "errors in training labels: a group of samples the model cannot fit while validation is flat",
        ("diagnose=overfit",),
    ),
    "vanishing_gradients": Cause(
        "vanishing gradients: the first layers get orders of magnitude less gradient than the last",
        ("model.activation=relu", "model.norm=batch"),
    ),
    "dead_relus": Cause("dead ReLUs: most units of a layer never fire", ("lr=<lr/3>", "model.activation=leaky_relu")),
    "model_too_small": Cause("large bias: the model is too small to fit the training set", ("model.width=<4x>",)),
    "model_too_big": Cause(
        "large variance: the model fits training but not validation (too big for the data)",
        ("'regularization=[l2]'", "data.samples_per_class=<more>"),
    ),
    "too_few_epochs": Cause("too few epochs: the losses are still falling at the end", ("epochs=<2x>",)),
}
