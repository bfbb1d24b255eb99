"""make_grid: tile a batch of images into one image, like ``torchvision.utils.make_grid`` (torchvision-free)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["make_grid"]


def _to_numpy(images: Any) -> tuple[np.ndarray, bool]:
    if hasattr(images, "detach") and hasattr(images, "cpu"):
        return images.detach().cpu().float().numpy(), True
    if isinstance(images, (list, tuple)):
        parts = [_to_numpy(image) for image in images]
        return np.stack([p[0] for p in parts]), any(p[1] for p in parts)
    return np.asarray(images, dtype=np.float32), False


def _normalize(image: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    low, high = value_range if value_range is not None else (float(image.min()), float(image.max()))
    scaled: np.ndarray = (np.clip(image, low, high) - low) / max(high - low, 1e-5)
    return scaled


def make_grid(
    images: Any,
    nrow: int = 8,
    padding: int = 2,
    normalize: bool = False,
    value_range: tuple[float, float] | None = None,
    scale_each: bool = False,
    pad_value: float = 0.0,
    *,
    range: tuple[float, float] | None = None,  # noqa: A002 - torchvision's old name, kept for old callers
) -> Any:
    """Tile images ``[B, C, H, W]`` (or ``[C, H, W]``, ``[H, W]``, a list of ``[C, H, W]``) into ``[C, H', W']``.

    Single-channel images become three-channel. With ``normalize`` the values are shifted into [0, 1] using
    ``value_range`` (or the images' min and max), per image when ``scale_each``. A torch input gives a torch
    tensor, anything else a numpy array.

    Args:
        images: The batch.
        nrow: Images per row.
        padding: Pixels between images and around the grid.
        normalize: Shift values into [0, 1].
        value_range: ``(min, max)`` used by ``normalize``; ``range`` is the same, under torchvision's old name.
        scale_each: Normalize each image separately.
        pad_value: Value of the padding pixels.

    Returns:
        The grid, ``[C, H', W']``.

    Raises:
        ValueError: ``images`` does not have 2 to 4 dimensions.

    Example:
        >>> import numpy as np
        >>> make_grid(np.zeros((5, 1, 4, 4)), nrow=2).shape
        (3, 20, 14)
    """
    value_range = value_range if value_range is not None else range
    array, is_torch = _to_numpy(images)
    array = array.astype(np.float32, copy=True)
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"make_grid needs [B, C, H, W] or [C, H, W] images, got shape {tuple(array.shape)}")
    if array.shape[1] == 1:
        array = np.repeat(array, 3, axis=1)
    if normalize:
        if scale_each:
            array = np.stack([_normalize(image, value_range) for image in array])
        else:
            array = _normalize(array, value_range)
    count, channels, height, width = array.shape
    if count == 1:
        grid = array[0]
    else:
        columns = min(nrow, count)
        rows = math.ceil(count / columns)
        cell_h, cell_w = height + padding, width + padding
        grid = np.full((channels, rows * cell_h + padding, columns * cell_w + padding), pad_value, np.float32)
        for k, image in enumerate(array):
            y, x = divmod(k, columns)
            top, left = y * cell_h + padding, x * cell_w + padding
            grid[:, top : top + height, left : left + width] = image
    if is_torch:
        import torch

        return torch.from_numpy(np.ascontiguousarray(grid))
    return grid
