"""The streaming input pipeline on a generated ImageFolder of 128x128 JPEGs.

Three measurements (issue 15):
  memory     peak memory of the whole process tree of `cnnspec train` for one epoch, at
             the smallest and the largest folder size: ratio <= 1.1 and under 3 GiB. Both
             the sum of RSS and the sum of PSS are reported; the target is held on PSS,
             since RSS counts the torch libraries every forked worker shares once per
             worker (PSS divides shared pages among the processes that map them)
  torch      images/s of cnnspec's torch loader (index + DataLoader + Pillow decode + flip)
             against torchvision.datasets.ImageFolder + DataLoader with the same workers,
             decode, resize and flip: ratio >= 0.95
  keras      images/s of cnnspec's Keras loader (keras.utils.PyDataset with workers) against
             a hand-written tf.data pipeline doing the same work: ratio >= 0.90
The folders are written once under /tmp (kept: a second run skips them). The throughput
runs alternate between the two sides and compare medians, so a busy machine slows both
alike; the full sizes are for a quiet machine:

    python bench/data_pipeline.py [--sizes 10000,100000] [--workers 4] [--batches 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import ROOT, checkout_env, machine, target_row, write_json

SIZE, CLASSES, BATCH = 128, 10, 64
SPEC = f"""model pipeline_probe
input {SIZE}x{SIZE}x3
conv 8 3x3 stride=4 relu
maxpool 4
flatten
dense {CLASSES} softmax
compile {{ optimizer sgd lr=0.01; epochs 1; batch_size {BATCH}; validation_split 0.0 }}
"""


def write_folder(n: int, root: Path) -> Path:
    """root/c<k>/<i>.jpg, n images of SIZE x SIZE in CLASSES classes; skipped when done."""
    from PIL import Image

    done = root / f".complete-{n}"
    if done.exists():
        return root
    rng = np.random.default_rng(n)
    for k in range(CLASSES):
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
    # smooth colour fields (upsampled noise) compress like photographs, unlike pure noise
    for i in range(n):
        small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        image.save(root / f"c{i % CLASSES}" / f"{i:06d}.jpg", quality=90)
    done.touch()
    return root


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) bytes summed over `pid` and all its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    rss = pss = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss


def peak_train_memory(folder: Path, workers: int, work: Path) -> tuple[int, int, float]:
    """(peak RSS, peak PSS of the process tree, seconds) of `cnnspec train`, one epoch."""
    spec = work / "probe.cnn"
    spec.write_text(SPEC)
    out = work / f"run-{folder.name}"
    cmd = [
        sys.executable,
        "-m",
        "cnnspec",
        "train",
        str(spec),
        "--data",
        str(folder),
        "--out",
        str(out),
        "--overwrite",
        "--progress",
        "off",
        "--workers",
        str(workers),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=checkout_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        rss, pss = tree_memory(proc.pid)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"cnnspec train failed: {proc.stderr.read()[-2000:]}")
    return peak_rss, peak_pss, time.perf_counter() - t0


def _rate(batches, limit: int) -> float:
    """Images per second over the first `limit` batches (the first one, which starts the
    workers, is not timed)."""
    it = iter(batches)
    next(it)
    n, t0 = 0, time.perf_counter()
    for k, batch in enumerate(it):
        n += len(batch["x"] if isinstance(batch, dict) else batch[0])
        if k + 1 >= limit:
            break
    return n / (time.perf_counter() - t0)


def torch_rates(folder: Path, workers: int, limit: int) -> tuple[float, float]:
    import torch
    import torchvision
    from torchvision.transforms import v2

    from cnnspec.data import index, parse_ops
    from cnnspec.data.torch_loader import set_epoch, torch_loader

    samples = index(str(folder), (SIZE, SIZE, 3), "classify")
    ours = torch_loader(
        samples, BATCH, train=True, seed=0, ops=parse_ops(["flip"]), workers=workers
    )
    set_epoch(ours, 0)
    # the same work: Pillow decode, RGB, resize to SIZE (a no-op at SIZE), flip, float [0, 1]
    transform = v2.Compose(
        [
            v2.Resize((SIZE, SIZE)),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    reference = torch.utils.data.DataLoader(
        torchvision.datasets.ImageFolder(str(folder), transform=transform),
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    return _rate(ours, limit), _rate(reference, limit)


def keras_rates(folder: Path, workers: int, limit: int) -> tuple[float, float]:
    import tensorflow as tf

    from cnnspec.data import index, parse_ops
    from cnnspec.data.loading import keras_batches

    samples = index(str(folder), (SIZE, SIZE, 3), "classify")
    ours = keras_batches(
        samples, BATCH, train=True, seed=0, ops=parse_ops(["flip"]), workers=workers
    )
    paths = [str(p) for p in samples.reader.paths]

    def decode(path, label):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        image = tf.image.resize(image, (SIZE, SIZE))  # float32, as ours
        return tf.image.random_flip_left_right(image) / 255.0, label

    reference = (
        tf.data.Dataset.from_tensor_slices((paths, samples.y))
        .shuffle(len(paths))
        .map(decode, num_parallel_calls=max(workers, 1))
        .batch(BATCH)
        .prefetch(2)
        .as_numpy_iterator()
    )
    return _rate(ours, limit), _rate(reference, limit)


def alternate(measure, rounds: int) -> tuple[float, float]:
    pairs = [measure() for _ in range(rounds)]
    return (statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="folder sizes, comma-separated")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batches", type=int, default=100, help="batches per throughput run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "cnnspec-bench"))
    parser.add_argument("--no-keras", action="store_true")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    root = Path(args.root)
    folders = {n: write_folder(n, root / f"folder-{n}") for n in sizes}
    rows, data = [], {"machine": machine(), "workers": args.workers, "sizes": sizes}
    with tempfile.TemporaryDirectory() as work:
        memory = {n: peak_train_memory(folders[n], args.workers, Path(work)) for n in sizes}
    for n, (rss, pss, seconds) in memory.items():
        print(
            f"train 1 epoch on {n} images: peak RSS {rss / 2**20:.0f} MiB, "
            f"PSS {pss / 2**20:.0f} MiB (process tree), {seconds:.0f} s"
        )
    small, large = memory[sizes[0]][1], memory[sizes[-1]][1]
    ratio = large / small
    print(f"peak PSS ratio {sizes[-1]}/{sizes[0]} = {ratio:.3f}")
    rows.append(
        target_row(
            f"peak PSS of the tree, train 1 epoch, {sizes[-1]} / {sizes[0]} images",
            ratio,
            "<= 1.1, < 3 GiB",
            ratio <= 1.1 and large < 3 * 2**30,
        )
    )
    data["peak_rss"] = {str(n): m[0] for n, m in memory.items()}
    data["peak_pss"] = {str(n): m[1] for n, m in memory.items()}
    folder = folders[sizes[0]]
    ours, ref = alternate(lambda: torch_rates(folder, args.workers, args.batches), args.rounds)
    print(
        f"torch: cnnspec {ours:.0f} images/s, ImageFolder + DataLoader {ref:.0f} images/s, "
        f"ratio {ours / ref:.3f}"
    )
    rows.append(
        target_row(
            "torch input pipeline: cnnspec / ImageFolder + DataLoader (images/s)",
            ours / ref,
            ">= 0.95",
            ours / ref >= 0.95,
        )
    )
    data["torch"] = {"cnnspec": ours, "reference": ref}
    if not args.no_keras:
        ours, ref = alternate(lambda: keras_rates(folder, args.workers, args.batches), args.rounds)
        print(
            f"keras: cnnspec {ours:.0f} images/s, tf.data {ref:.0f} images/s, "
            f"ratio {ours / ref:.3f}"
        )
        rows.append(
            target_row(
                "Keras input pipeline: cnnspec / hand-written tf.data (images/s)",
                ours / ref,
                ">= 0.90",
                ours / ref >= 0.90,
            )
        )
        data["keras"] = {"cnnspec": ours, "reference": ref}
    data["report_rows"] = rows
    write_json(args.json, data)


if __name__ == "__main__":
    main()
