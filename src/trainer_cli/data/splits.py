"""Fixed, seeded splits of a labelled set (the test hold-out, the validation split)."""

from __future__ import annotations

import numpy as np


def split_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) index arrays; stratified by label when every class can be split."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    held = int(np.ceil(fraction * len(labels)))
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    # Stratify when each class has 2+ samples and both sides can hold one of each class.
    can_stratify = counts.min() >= 2 and min(held, len(labels) - held) >= len(counts)
    kept, out = train_test_split(
        indices, test_size=fraction, random_state=seed, stratify=labels if can_stratify else None
    )
    return np.sort(kept), np.sort(out)
