"""Preprocessing fitted on the training split only, stored in checkpoints, applied everywhere.

The kinds follow the lecture: subtract the mean image (AlexNet), the per-channel mean
(VGG), the per-channel mean and std (ResNet), or decorrelate the pixels with PCA or ZCA.
Every kind keeps the image's shape, so any model accepts its output.
"""

from __future__ import annotations

import torch

from trainer_cli import checks
from trainer_cli.config import UserError

KINDS = ["none", "mean_image", "standardize", "channel_mean", "channel_mean_std", "pca", "zca"]
# PCA/ZCA hold a D x D matrix (D = C*H*W values per image) and eigendecompose it once.
MAX_WHITENING_DIM = 4096


class Preprocess:
    """A fitted transform x -> A (x - mean) / std of each image, or the identity.

    - `mean_image`: subtract the mean training image (per pixel and channel).
    - `standardize`: per dimension, (x_i - m_i) / sigma_i (the lecture's standardisation:
      each pixel of each channel its own mean and std; a constant pixel is only centred).
    - `channel_mean`: subtract the per-channel mean.
    - `channel_mean_std`: also divide by the per-channel std.
    - `pca`: project the centred image onto the top `components` principal components and
      back into image space (a rank-k image); `whiten` also scales each component to unit
      variance, 1 / sqrt(lambda + epsilon).
    - `zca`: ZCA whitening, U diag(1 / sqrt(lambda + epsilon)) U^T (x - mean): unit
      covariance up to epsilon, and the images stay as close to the originals as whitening
      allows (the symmetric whitening matrix).

    `fit` reads statistics from the training split alone; `state_dict` carries them into
    checkpoints (tensors only) so evaluation and later inference apply the same transform.

    Args:
        kind: one of KINDS.
        components: for `pca`, how many principal components to keep (None: all).
        whiten: for `pca`, divide each kept component by its standard deviation.
        epsilon: added to the eigenvalues before whitening (`pca` with whiten, `zca`); it
            keeps near-zero-variance directions (e.g. always-black border pixels) from
            being blown up into noise.
    """

    def __init__(
        self, kind: str = "channel_mean_std", components: int | None = None, whiten: bool = False, epsilon: float = 1e-2
    ) -> None:
        checks.choice("preprocess", kind, KINDS)
        checks.whole_number("pca_components", components, optional=True)
        checks.number("whitening_epsilon", epsilon, low=0.0)
        self.kind, self.components, self.whiten, self.epsilon = kind, components, whiten, epsilon
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.matrix: torch.Tensor | None = None  # D x D, applied to flattened centred images

    @property
    def fitted(self) -> bool:
        """Whether the statistics are there: fitted, or carried over (`init_from`'s run)."""
        return self.kind == "none" or self.mean is not None

    def fit(self, images: torch.Tensor) -> Preprocess:
        """Fit the statistics on (training) images of shape (N, C, H, W)."""
        images = images.double()
        if self.kind in ("channel_mean", "channel_mean_std"):
            self.mean = images.mean(dim=(0, 2, 3), keepdim=True)[0].float()
        elif self.kind in ("mean_image", "standardize", "pca", "zca"):
            self.mean = images.mean(dim=0).float()
        if self.kind == "standardize":
            # A constant pixel (std 0, e.g. digits' always-black border) is centred, not divided by 0.
            std = images.std(dim=0)
            self.std = torch.where(std > 1e-6, std, torch.ones_like(std)).float()
        if self.kind == "channel_mean_std":
            # A constant channel (std 0) is left unscaled rather than divided by zero.
            self.std = images.std(dim=(0, 2, 3), keepdim=True)[0].float().clamp_min(1e-6)
        if self.kind in ("pca", "zca"):
            self.matrix = self._whitening_matrix(images)
        return self

    def _whitening_matrix(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(1)
        dim = flat.shape[1]
        if dim > MAX_WHITENING_DIM:
            raise UserError(
                f"data.preprocess: {self.kind} needs at most {MAX_WHITENING_DIM} values per image "
                f"(C*H*W), this data has {dim}; use channel_mean_std or a smaller data.image_size"
            )
        centred = flat - flat.mean(dim=0)
        covariance = centred.T @ centred / max(1, flat.shape[0] - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0), eigenvectors.flip(1)
        if self.kind == "zca":
            scale = 1.0 / torch.sqrt(eigenvalues + self.epsilon)
        else:
            keep = dim if self.components is None else self.components
            checks.whole_number("data.pca_components", keep, maximum=dim, optional=True, error=UserError)
            eigenvectors = eigenvectors[:, :keep]
            scale = 1.0 / torch.sqrt(eigenvalues[:keep] + self.epsilon) if self.whiten else torch.ones(keep)
        # x -> U diag(scale) U^T x: for pca the projection onto the top components, expressed
        # back in pixel space so that the image keeps its shape.
        return ((eigenvectors * scale) @ eigenvectors.T).float()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.kind == "none" or self.mean is None:
            return images
        out = images - self.mean.to(images.device)
        if self.std is not None:
            out = out / self.std.to(images.device)
        if self.matrix is not None:
            # The matrix is symmetric: (x U S U^T) for row vectors x.
            out = (out.flatten(1) @ self.matrix.to(images.device)).view_as(images)
        return out

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "components": self.components,
            "whiten": self.whiten,
            "epsilon": self.epsilon,
            "mean": self.mean,
            "std": self.std,
            "matrix": self.matrix,
        }

    def load_state_dict(self, state: dict) -> None:
        self.kind, self.mean, self.std = state["kind"], state["mean"], state["std"]
        self.components = state.get("components")
        self.whiten, self.epsilon = state.get("whiten", False), state.get("epsilon", 1e-2)
        self.matrix = state.get("matrix")
        # Checkpoints from before this module kept flat per-channel (C,) statistics.
        if self.mean is not None and self.mean.ndim == 1:
            self.mean = self.mean.view(-1, 1, 1)
        if self.std is not None and self.std.ndim == 1:
            self.std = self.std.view(-1, 1, 1)
