"""What a run leaves behind: history.csv, result.json, curves.png, sample grids."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from .checkpoint import atomic_path, write_text


def write_history(out: Path, history: list[dict]) -> None:
    """One row per epoch, every loss and metric (train_* and val_*), the lr and the time."""
    keys: list[str] = []
    for row in history:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _fmt(row.get(k)) for k in keys})
    write_text(Path(out) / "history.csv", buf.getvalue())


def _fmt(value):
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else value


def read_history(out: Path) -> list[dict]:
    with open(Path(out) / "history.csv", newline="", encoding="utf-8") as fh:
        return [{k: float(v) if v else None for k, v in row.items()} for row in csv.DictReader(fh)]


def write_result(out: Path, result: dict) -> None:
    write_text(Path(out) / "result.json", json.dumps(result, indent=2) + "\n")


def curve_panels(history: list[dict]) -> list[str]:
    """What curves.png draws, one panel each: the total loss where there is one (its terms,
    loss_*, would repeat it; a GAN has only its players' loss_d and loss_g), then each metric."""
    names = []
    for k in history[0]:
        if k.startswith(("train_", "val_")):
            base = k.split("_", 1)[1]
            if base not in names:
                names.append(base)
        elif k.startswith("sample_"):  # a generator's judged samples (train/judge.py)
            names.append(k)
    losses = ["loss"] if "loss" in names else [n for n in names if n.startswith("loss_")]
    return losses + [n for n in names if n != "loss" and not n.startswith("loss_")]


def plot_curves(out: Path, history: list[dict], title: str = "") -> None:
    """curves.png: the losses in one panel, each metric in its own, train and val."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = curve_panels(history)
    cols = min(len(panels), 4)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    epochs = [r["epoch"] for r in history]
    for ax, name in zip(axes.flat, panels):
        for split, key in (("train", f"train_{name}"), ("val", f"val_{name}"), ("samples", name)):
            if key in history[0]:
                ax.plot(epochs, [r.get(key) for r in history], marker=".", label=split)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_path(Path(out) / "curves.png", lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


def save_grid(path: Path, images: np.ndarray, cols: int = 8) -> None:
    """A PNG grid of NHWC images in [0, 1] (generated samples, predicted masks)."""
    from PIL import Image

    images = np.clip(np.asarray(images, dtype=np.float32), 0, 1)
    n, h, w, c = images.shape
    rows = -(-n // cols)
    grid = np.ones((rows * (h + 2), cols * (w + 2), c), dtype=np.float32)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * (h + 2) + 1 : r * (h + 2) + 1 + h, q * (w + 2) + 1 : q * (w + 2) + 1 + w] = img
    data = (grid * 255).round().astype(np.uint8)
    pil = Image.fromarray(data[..., 0] if c == 1 else data)
    atomic_path(Path(path), lambda tmp: pil.save(tmp, format="PNG"))
