"""Sources that arrive as arrays: the bundled sklearn digits and user .npz files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from cnnspec.data import DataError
from cnnspec.data.dataset import Dataset, refuse_oversize
from cnnspec.data.imaging import fit_images, resize_masks

NPZ_HINT = "save it with numpy.savez(path, x=images, y=labels); x is (N, H, W, C) or (N, H, W)"


def read_digits(size: tuple[int, int], channels: int) -> Dataset:
    """sklearn's 1,797 8x8 handwritten digits (shipped with scikit-learn, no download)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]  # pixel values are 0..16
    return Dataset(
        x=fit_images(x, size, channels),
        y=bunch.target,
        classes=[str(d) for d in range(10)],
        task="classify",
    )


def read_npz(path: Path, size: tuple[int, int], channels: int) -> Dataset:
    """An .npz with `x` and `y`, optionally `boxes`, `masks`, `present` and `classes`."""
    arrays = _open_npz(path)
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise DataError(
            f"{path} has no array {missing[0]!r} (it has {sorted(arrays) or 'none'})", hint=NPZ_HINT
        )
    x = _images(arrays["x"], path)
    y = _labels(arrays["y"], path)
    if len(x) != len(y):
        raise DataError(
            f"{path}: x holds {len(x)} images but y holds {len(y)} labels",
            hint="x and y need one entry per image, in the same order",
        )
    masks = arrays.get("masks")
    if masks is not None and masks.shape != x.shape[:3]:
        raise DataError(f"{path}: masks has shape {masks.shape}, expected {x.shape[:3]} to match x")
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else _default_names(y)
    try:
        return Dataset(
            x=fit_images(x, size, channels),
            y=y,
            classes=classes,
            task="segment" if masks is not None else "detect" if "boxes" in arrays else "classify",
            boxes=arrays.get("boxes"),
            masks=None if masks is None else resize_masks(masks.astype(np.int64), size),
            present=arrays.get("present"),
        )
    except DataError as exc:  # name the file the bad array came from
        raise DataError(f"{path}: {exc.message}", hint=exc.hint) from exc


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            claimed = sum(_claimed_bytes(archive, key) for key in archive.files)
            refuse_oversize(
                claimed,
                f"{path} (its array headers)",
                "store fewer or smaller images, or split the file",
            )
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # allow_pickle=False: an .npz must never run code; object arrays land here too.
        raise DataError(f"cannot read {path}: {exc}", hint=NPZ_HINT + "; no object arrays") from exc


def _claimed_bytes(archive, key: str) -> int:
    """The size an array's .npy header claims, read before anything is allocated (a
    header may claim gigabytes over a few bytes of data)."""
    fmt = np.lib.format
    name = f"{key}.npy" if f"{key}.npy" in archive.zip.namelist() else key
    with archive.zip.open(name) as member:
        version = fmt.read_magic(member)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(member)
    return int(np.prod(shape, dtype=object)) * dtype.itemsize


def _images(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        hint = NPZ_HINT
        if x.ndim == 4 and x.shape[1] in (1, 3, 4):
            hint = "x looks channels-first (N, C, H, W); store np.transpose(x, (0, 2, 3, 1))"
        raise DataError(f"{path}: x has shape {x.shape}, not (N, H, W, C)", hint=hint)
    if 0 in x.shape[1:3]:
        raise DataError(
            f"{path}: x holds {x.shape[2]}x{x.shape[1]}-pixel images, nothing to learn from",
            hint="images need at least one pixel",
        )
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if x.dtype == np.uint16:
        return x.astype(np.float32) / 65535.0
    if x.dtype.kind != "f":
        raise DataError(
            f"{path}: x has dtype {x.dtype}", hint="store uint8 (0-255) or float in [0, 1]"
        )
    if x.size and (np.nanmin(x) < 0.0 or np.nanmax(x) > 1.0 or np.isnan(x).any()):
        raise DataError(
            f"{path}: float x ranges over [{np.nanmin(x):g}, {np.nanmax(x):g}], not [0, 1]",
            hint="store uint8 pixels (0-255) or floats scaled to [0, 1]",
        )
    return x.astype(np.float32)


def _labels(y: np.ndarray, path: Path) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"{path}: y has shape {y.shape}, expected (N,) class indices",
            hint="for one-hot labels store y.argmax(axis=1)",
        )
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0)):
        raise DataError(
            f"{path}: y holds {y.dtype} values, not integer class indices",
            hint="map class names to 0..K-1 and store the list in a 'classes' array",
        )
    if y.size and y.min() < 0:
        raise DataError(
            f"{path}: y holds the negative label {int(y.min())}",
            hint="class indices run from 0 to K-1",
        )
    return y.astype(np.int64)


def _default_names(y: np.ndarray) -> list[str]:
    return [str(i) for i in range(int(y.max()) + 1 if y.size else 0)]
