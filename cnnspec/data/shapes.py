"""A synthetic dataset of one circle, square or triangle per image.

It serves every task from one generator (class label, tight box, pixel mask, and
"nothing here" images), needs no download, and is exactly reproducible from a seed,
which makes it the project's test bed for training and for the file readers.
"""

from __future__ import annotations

import numpy as np

from cnnspec.data import DataError
from cnnspec.data.dataset import Dataset

SHAPE_CLASSES = ("circle", "square", "triangle")  # alphabetical, as folder readers sort them
NOISE = 0.04


def generate_shapes(
    n: int = 2000, size: tuple[int, int] = (64, 64), seed: int = 0, empty_fraction: float = 0.0
) -> Dataset:
    """n RGB images of size (H, W) as a segmentation-style Dataset.

    classes are ("background", "circle", "square", "triangle"); masks and y index
    them, so y is 1 + shape index, or 0 for the empty images (present == 0).
    Boxes are the tight box around the mask pixels, in pixel-edge coordinates.
    """
    _check_arguments(n, size, empty_fraction)
    rng = np.random.default_rng(seed)
    height, width = size
    # Cycling then permuting keeps the classes balanced to within one image.
    kinds = rng.permutation(np.arange(n) % len(SHAPE_CLASSES))
    empty = np.zeros(n, dtype=bool)
    empty[rng.permutation(n)[: round(n * empty_fraction)]] = True
    grid = _pixel_centres(size)
    x = np.empty((n, height, width, 3), dtype=np.float32)
    masks = np.zeros((n, height, width), dtype=np.int64)
    for i in range(n):
        x[i], inside = _draw(rng, grid, int(kinds[i]), bool(empty[i]))
        masks[i][inside] = kinds[i] + 1
    return Dataset(
        x=x,
        y=np.where(empty, 0, kinds + 1),
        classes=["background", *SHAPE_CLASSES],
        task="segment",
        boxes=boxes_from_masks(masks),
        masks=masks,
        present=(~empty).astype(np.float32),
    )


def _check_arguments(n: int, size: tuple[int, int], empty_fraction: float) -> None:
    if int(n) < 1:
        raise DataError(f"shapes needs n >= 1 images, got n={n}")
    if min(size) < 4:
        raise DataError(f"shapes images must be at least 4x4 pixels, got {size}")
    if not 0.0 <= empty_fraction < 1.0:
        raise DataError(
            f"empty_fraction must be in [0, 1), got {empty_fraction}",
            hint="e.g. empty_fraction=0.1 makes 10% of the images hold no shape",
        )


def _pixel_centres(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    height, width = size
    return np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)


def _draw(rng, grid, kind: int, empty: bool) -> tuple[np.ndarray, np.ndarray]:
    """One noisy image and its boolean shape mask (all False when empty)."""
    px, _ = grid
    background, colour = _palette(rng)
    inside = (
        np.zeros(px.shape, dtype=bool) if empty else _rasterise(kind, _place(rng, px.shape), grid)
    )
    image = np.where(inside[..., None], colour, background)
    image = image + rng.normal(0.0, NOISE, size=image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32), inside


def _palette(rng) -> tuple[np.ndarray, np.ndarray]:
    # Dark-on-light or light-on-dark with a wide luminance gap, so the shape stays
    # visible after conversion to grey.
    dark = rng.uniform(0.0, 0.35, size=3)
    light = rng.uniform(0.6, 1.0, size=3)
    return (dark, light) if rng.random() < 0.5 else (light, dark)


def _place(rng, shape: tuple[int, int]) -> tuple[float, float, float]:
    """Centre (cx, cy) and radius r of a shape that fits inside the image."""
    height, width = shape
    radius = max(rng.uniform(0.15, 0.35) * min(height, width), 1.0)
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    return cx, cy, radius


def _rasterise(kind: int, placement, grid) -> np.ndarray:
    cx, cy, r = placement
    px, py = grid
    if SHAPE_CLASSES[kind] == "circle":
        inside = (px - cx) ** 2 + (py - cy) ** 2 <= r * r
    elif SHAPE_CLASSES[kind] == "square":
        half = 0.9 * r  # a little smaller so its area is close to the circle's
        inside = (np.abs(px - cx) <= half) & (np.abs(py - cy) <= half)
    else:  # triangle pointing up: half-width grows from 0 at the apex to r at the base
        inside = (py <= cy + r) & (np.abs(px - cx) <= (py - (cy - r)) / 2.0)
    if not inside.any():  # tiny shapes can miss every pixel centre: keep the nearest pixel
        inside[min(int(cy), px.shape[0] - 1), min(int(cx), px.shape[1] - 1)] = True
    return inside


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight [x0, y0, x1, y1] boxes around non-zero pixels, normalised; zeros if none."""
    n, height, width = masks.shape
    boxes = np.zeros((n, 4), dtype=np.float32)
    for i in range(n):
        rows = np.flatnonzero(masks[i].any(axis=1))
        cols = np.flatnonzero(masks[i].any(axis=0))
        if len(rows):
            boxes[i] = [
                cols[0] / width,
                rows[0] / height,
                (cols[-1] + 1) / width,
                (rows[-1] + 1) / height,
            ]
    return boxes
