"""Batched augmentation: whole training batches on the training device, per-sample randomness.

Each augmentation is a class configured by `conf/augmentation/<name>.yaml` (its keys are
the constructor's arguments) and called on a float batch (N, C, H, W) of pixel values in
[0, 1], before preprocessing; it returns a new batch of the same shape and dtype. The
tensor ones draw one set of random parameters per sample and apply them all at once (no
Python loop over the samples); the policy ones (AutoAugment, RandAugment, TrivialAugment,
AugMix) run torchvision's v2 transforms on uint8 images, one draw per `group_size` images.
They use the global torch random generator of the batch's device, whose state is in every
checkpoint, so a resumed run draws the same augmentations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from trainer_cli import checks


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.rand(n, device=device) * (high - low) + low


def _sample(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample each image through its own 2x3 affine map (output -> input coordinates)."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class RandomFlip:
    """Mirror each image left-right with probability p."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = checks.number("p", p, 0.0, 1.0)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(images.shape[0], device=images.device) < self.p
        return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


class RandomCrop:
    """Zero-pad by `padding` and cut a random window of the original size: a translation of
    up to `padding` pixels in each direction, the same for all channels of an image."""

    def __init__(self, padding: int = 4) -> None:
        self.padding = checks.whole_number("padding", padding, minimum=0)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        padding = self.padding
        if padding <= 0:
            return images
        n, channels, height, width = images.shape
        device = images.device
        padded = F.pad(images, (padding, padding, padding, padding))
        top = torch.randint(0, 2 * padding + 1, (n, 1, 1, 1), device=device)
        left = torch.randint(0, 2 * padding + 1, (n, 1, 1, 1), device=device)
        # Two gathers (rows, then columns) cut each image's own window: no loop over samples.
        rows = top + torch.arange(height, device=device).view(1, 1, height, 1)
        rows = rows.expand(n, channels, height, width + 2 * padding)
        cols = (left + torch.arange(width, device=device).view(1, 1, 1, width)).expand(n, channels, height, width)
        return padded.gather(2, rows).gather(3, cols)


class RandomResizedCrop:
    """A random window of `scale` (fraction of the area) and aspect `ratio`, resized back to
    the image size (bilinear): random crops and zooms, as in the Inception/ResNet recipes."""

    def __init__(self, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3)) -> None:
        self.scale, self.ratio = tuple(scale), tuple(ratio)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, device = images.shape[0], images.device
        area = _uniform(n, *self.scale, device)
        log_ratio = _uniform(n, math.log(self.ratio[0]), math.log(self.ratio[1]), device)
        aspect = torch.exp(log_ratio)
        # Window width and height as fractions of the image's; clipped to fit inside it.
        w = torch.sqrt(area * aspect).clamp(max=1.0)
        h = torch.sqrt(area / aspect).clamp(max=1.0)
        # Centre anywhere that keeps the window inside the image (normalized coords in [-1, 1]).
        cx = (torch.rand(n, device=device) * 2 - 1) * (1 - w)
        cy = (torch.rand(n, device=device) * 2 - 1) * (1 - h)
        zero = torch.zeros_like(w)
        theta = torch.stack([torch.stack([w, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
        return _sample(images, theta)


class ColorJitter:
    """Per-image random brightness, contrast, saturation (factors in [1 - x, 1 + x]) and hue
    (a rotation by up to `hue` of a full turn, in YIQ colour space); values stay in [0, 1].
    Saturation and hue leave grey (1-channel) images unchanged."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.0):
        self.brightness = checks.number("brightness", brightness, 0.0, 1.0)
        self.contrast = checks.number("contrast", contrast, 0.0, 1.0)
        self.saturation = checks.number("saturation", saturation, 0.0, 1.0)
        self.hue = checks.number("hue", hue, 0.0, 0.5)

    @staticmethod
    def _grey(images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] != 3:
            return images.mean(dim=1, keepdim=True)
        weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype)
        return (images * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, device = images.shape[0], images.device

        def factor(amount: float) -> torch.Tensor:
            return _uniform(n, max(0.0, 1 - amount), 1 + amount, device).view(n, 1, 1, 1).to(images.dtype)

        out = images
        if self.brightness > 0:
            out = (out * factor(self.brightness)).clamp(0, 1)
        if self.contrast > 0:
            mean = self._grey(out).mean(dim=(1, 2, 3), keepdim=True)
            out = (mean + (out - mean) * factor(self.contrast)).clamp(0, 1)
        if images.shape[1] == 3 and self.saturation > 0:
            grey = self._grey(out)
            out = (grey + (out - grey) * factor(self.saturation)).clamp(0, 1)
        if images.shape[1] == 3 and self.hue > 0:
            angle = _uniform(n, -self.hue, self.hue, device) * 2 * math.pi
            to_yiq = torch.tensor(
                [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=device
            )
            cos, sin = torch.cos(angle), torch.sin(angle)
            one, zero = torch.ones_like(cos), torch.zeros_like(cos)
            rotate = torch.stack(
                [
                    torch.stack([one, zero, zero], 1),
                    torch.stack([zero, cos, -sin], 1),
                    torch.stack([zero, sin, cos], 1),
                ],
                1,
            )
            # Per-image 3x3 colour matrix: back from YIQ after rotating the chroma plane.
            matrix = torch.linalg.inv(to_yiq) @ rotate @ to_yiq
            out = torch.einsum("nij,njhw->nihw", matrix.to(out.dtype), out).clamp(0, 1)
        return out


class PCALighting:
    """AlexNet's lighting noise: add to every pixel of an image sum_i alpha_i lambda_i u_i,
    where (lambda_i, u_i) are the eigenvalues and eigenvectors of the training set's
    channel covariance and alpha_i ~ N(0, std) is drawn once per image. `fit` reads the
    covariance from the training split."""

    def __init__(self, std: float = 0.1) -> None:
        self.std = std
        self.eigenvalues: torch.Tensor | None = None
        self.eigenvectors: torch.Tensor | None = None

    def fit(self, images: torch.Tensor) -> PCALighting:
        pixels = images.transpose(0, 1).flatten(1).double()  # (C, N*H*W)
        covariance = torch.cov(pixels).reshape(images.shape[1], images.shape[1])
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        self.eigenvalues, self.eigenvectors = eigenvalues.clamp_min(0).float(), eigenvectors.float()
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.eigenvalues is None:
            raise RuntimeError("PCALighting: call fit(training images) first")
        alpha = torch.randn(images.shape[0], images.shape[1], device=images.device) * self.std
        vectors, values = self.eigenvectors.to(images.device), self.eigenvalues.to(images.device)
        offset = (alpha * values) @ vectors.T  # (N, C): sum_i alpha_i lambda_i u_i
        return (images + offset.to(images.dtype).view(*offset.shape, 1, 1)).clamp(0, 1)


class RandomAffine:
    """Per-image rotation (degrees), translation (fraction of the size), shear (degrees,
    along x) and stretch (independent scale factors for x and y), in one resampling."""

    def __init__(
        self,
        degrees: float = 10.0,
        translate: float = 0.1,
        shear: float = 10.0,
        stretch: Sequence[float] = (0.9, 1.1),
    ) -> None:
        self.degrees, self.translate, self.shear, self.stretch = degrees, translate, shear, tuple(stretch)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, device = images.shape[0], images.device
        angle = torch.deg2rad(_uniform(n, -self.degrees, self.degrees, device))
        shear = torch.tan(torch.deg2rad(_uniform(n, -self.shear, self.shear, device)))
        sx, sy = _uniform(n, *self.stretch, device), _uniform(n, *self.stretch, device)
        # Translation in normalized coordinates: the image spans [-1, 1], so 2 * fraction.
        tx = _uniform(n, -self.translate, self.translate, device) * 2
        ty = _uniform(n, -self.translate, self.translate, device) * 2
        cos, sin, zero, one = (
            torch.cos(angle),
            torch.sin(angle),
            torch.zeros(n, device=device),
            torch.ones(n, device=device),
        )
        rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
        shearing = torch.stack([torch.stack([one, shear], 1), torch.stack([zero, one], 1)], 1)
        scaling = torch.stack([torch.stack([sx, zero], 1), torch.stack([zero, sy], 1)], 1)
        # The sampling map goes from output to input pixels: the inverse of the image's motion.
        linear = torch.linalg.inv(rotation @ shearing @ scaling)
        offset = -(linear @ torch.stack([tx, ty], 1).unsqueeze(-1))
        return _sample(images, torch.cat([linear, offset], dim=2))


class RandomPerspective:
    """With probability p, move each corner of an image inwards at random (by up to
    `distortion` of the half-size) and warp the image by the homography that maps the
    corners there: a change of viewpoint, as through a tilted lens."""

    def __init__(self, distortion: float = 0.3, p: float = 0.5) -> None:
        self.distortion, self.p = checks.number("distortion", distortion, 0.0, 1.0), checks.number("p", p, 0.0, 1.0)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        device = images.device
        corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=device)
        apply = (torch.rand(n, 1, 1, device=device) < self.p).float()
        shift = torch.rand(n, 4, 2, device=device) * self.distortion * apply
        # Move each corner towards the centre: the output corners are where the input's go.
        moved = corners * (1 - shift)
        homography = _homography(moved, corners.expand(n, 4, 2))  # output -> input
        ys = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, device=device)
        xs = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, device=device)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], -1).view(1, -1, 3)
        mapped = points @ homography.transpose(1, 2)
        grid = (mapped[..., :2] / mapped[..., 2:]).view(n, height, width, 2)
        return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def _homography(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The (N, 3, 3) projective maps taking 4 source points to 4 target points, (N, 4, 2)."""
    n = source.shape[0]
    x, y = source[..., 0], source[..., 1]
    u, v = target[..., 0], target[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], -1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], -1)
    system = torch.cat([rows_u, rows_v], 1)  # (N, 8, 8)
    solution = torch.linalg.solve(system, torch.cat([u, v], 1).unsqueeze(-1)).squeeze(-1)
    return torch.cat([solution, torch.ones(n, 1, device=source.device)], 1).view(n, 3, 3)


class ElasticTransform:
    """Simard et al.'s elastic distortion: a random displacement field per image, smoothed by
    a Gaussian of `sigma` pixels and scaled to `alpha` pixels."""

    def __init__(self, alpha: float = 34.0, sigma: float = 4.0) -> None:
        self.alpha, self.sigma = alpha, sigma

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        device = images.device
        field = torch.rand(n, 2, height, width, device=device) * 2 - 1
        radius = max(1, int(3 * self.sigma))
        taps = torch.arange(-radius, radius + 1, device=device, dtype=field.dtype)
        kernel = torch.exp(-(taps**2) / (2 * self.sigma**2))
        kernel = kernel / kernel.sum()
        # Separable Gaussian blur of both displacement channels at once.
        field = F.conv2d(F.pad(field, (radius, radius, 0, 0), mode="reflect" if radius < width else "replicate"),
                         kernel.view(1, 1, 1, -1).expand(2, 1, 1, -1), groups=2)  # fmt: skip
        field = F.conv2d(F.pad(field, (0, 0, radius, radius), mode="reflect" if radius < height else "replicate"),
                         kernel.view(1, 1, -1, 1).expand(2, 1, -1, 1), groups=2)  # fmt: skip
        # Pixels -> normalized coordinates (the image spans 2 units).
        displacement = torch.stack([field[:, 0] * 2 / width, field[:, 1] * 2 / height], -1) * self.alpha
        identity = torch.eye(2, 3, device=device).expand(n, 2, 3)
        grid = F.affine_grid(identity, [n, 1, height, width], align_corners=False) + displacement
        return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


class _UInt8Policy:
    """Run a torchvision v2 policy on uint8 images, one random draw per `group_size` images.

    torchvision applies one draw to a whole batch, so the batch is cut into groups:
    `group_size: 1` gives every image its own operations (a loop over the samples, cheap
    next to the model on small images); larger groups trade diversity for speed.
    """

    transform: torch.nn.Module

    def __init__(self, group_size: int = 1) -> None:
        self.group_size = checks.whole_number("group_size", group_size)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        out = torch.cat([self.transform(group) for group in pixels.split(self.group_size)])
        return out.to(images.dtype) / 255


class AutoAugment(_UInt8Policy):
    """The learned AutoAugment policy for `policy`: cifar10, imagenet or svhn."""

    def __init__(self, policy: str = "cifar10", group_size: int = 1) -> None:
        from torchvision.transforms import v2

        super().__init__(group_size)
        policies = {p.value.lower(): p for p in v2.AutoAugmentPolicy}
        if policy.lower() not in policies:
            raise ValueError(
                f"augmentation.autoaugment.policy: '{policy}' is not accepted; choose {', '.join(policies)}"
            )
        self.policy = policy
        self.transform = v2.AutoAugment(policies[policy.lower()])


class RandAugment(_UInt8Policy):
    """RandAugment: `num_ops` operations drawn uniformly, each at `magnitude` (of 31 bins)."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9, group_size: int = 1) -> None:
        from torchvision.transforms import v2

        super().__init__(group_size)
        self.transform = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)


class TrivialAugment(_UInt8Policy):
    """TrivialAugment (wide): one operation at a random magnitude, no parameters to tune."""

    def __init__(self, group_size: int = 1) -> None:
        from torchvision.transforms import v2

        super().__init__(group_size)
        self.transform = v2.TrivialAugmentWide()


class AugMix(_UInt8Policy):
    """AugMix: a Dirichlet(alpha) mix of `mixture_width` chains of operations of `severity`,
    blended with the original image by a Beta(alpha, alpha) weight."""

    def __init__(
        self, severity: int = 3, mixture_width: int = 3, chain_depth: int = -1, alpha: float = 1.0, group_size: int = 1
    ) -> None:
        from torchvision.transforms import v2

        super().__init__(group_size)
        self.transform = v2.AugMix(severity=severity, mixture_width=mixture_width, chain_depth=chain_depth, alpha=alpha)


class Augmentation:
    """The selected augmentations, applied in the order they were listed."""

    def __init__(self, steps: Sequence) -> None:
        self.steps = list(steps)

    def fit(self, images: torch.Tensor) -> Augmentation:
        """Give the steps that need training statistics (PCA lighting) the training images."""
        for step in self.steps:
            if hasattr(step, "fit"):
                step.fit(images)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            images = step(images)
        return images


def save_preview(images: torch.Tensor, augment: Augmentation, path: Path, columns: int = 8) -> torch.Tensor:
    """Write a grid of the augmented images (pixels in [0, 1]) as a PNG and return it.

    The augmentations draw from a forked random generator, so a preview leaves the run's
    random stream, and hence its results, unchanged.
    """
    import torchvision

    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        augmented = augment(images)
    augmented = augmented.float().cpu().clamp(0, 1)
    # Small images (8x8 digits, 28x28 Fashion-MNIST) are enlarged, pixel for pixel, to be seen.
    zoom = max(1, 64 // augmented.shape[-1])
    augmented = augmented.repeat_interleave(zoom, dim=-2).repeat_interleave(zoom, dim=-1)
    grid = torchvision.utils.make_grid(augmented, nrow=columns, padding=2, pad_value=1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(grid, str(path))
    return grid
