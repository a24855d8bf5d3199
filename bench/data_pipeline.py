"""The streaming input pipeline on a generated ImageFolder of 128x128 JPEGs.

Three measurements (issue 15):
  memory     peak memory of the whole process tree of `cnnspec train` for one epoch, at
             the smallest and the largest folder size (medians of --memory-runs runs of
             each, the sizes in turn): ratio <= 1.1 and under 3 GiB, held
             on the sum of RSS, as the issue says. RSS counts the pages a forked worker
             shares with the trainer (torch's heap, about 300 MiB) once per worker; the sum
             of PSS, which divides shared pages among the processes mapping them, is
             reported beside it as the memory actually in use
  torch      images/s of cnnspec's torch loader (index + DataLoader + Pillow decode + flip)
             against torchvision.datasets.ImageFolder + DataLoader with the same workers,
             decode, resize and flip: ratio >= 0.95
  keras      images/s of cnnspec's Keras loader (tf.io decode on tf.data's threads, flip
             drawn in numpy keyed by rows, the pixels flipped by TF per image) against a hand-written tf.data pipeline doing the same
             work (decode with the accurate DCT, resize, flip, float): ratio >= 0.90
The folders are written once under /tmp (kept: a second run skips them). The throughput
runs alternate between the two sides and compare medians, so a busy machine slows both
alike. Each rate is given per wall second and per CPU second of the process tree (its
loader threads and worker processes): the latter does not count the waits for a core that
a shared machine adds, so it is the steadier of the two. The full sizes are for a quiet
machine:

    python bench/data_pipeline.py [--sizes 10000,100000] [--workers 4] [--batches 100]
                                  [--no-memory] [--no-keras] [--no-torch]
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


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) bytes summed over `pid` and all its descendants."""
    rss = pss = 0
    for p in process_tree(pid):
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


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and its living descendants."""
    ticks = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14, 15)
        except OSError:
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


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


def _rate(batches, limit: int) -> tuple[float, float]:
    """Images per wall second and per CPU second of this process tree, over the first
    `limit` batches (the first one, which starts the workers, is not timed)."""
    it = iter(batches)
    next(it)
    n, t0, c0 = 0, time.perf_counter(), tree_cpu(os.getpid())
    for k, batch in enumerate(it):
        n += len(batch["x"] if isinstance(batch, dict) else batch[0])
        if k + 1 >= limit:
            break
    cpu = tree_cpu(os.getpid()) - c0  # in clock ticks: nan for runs too short to count
    return n / (time.perf_counter() - t0), n / cpu if cpu > 0 else float("nan")


def torch_rates(folder: Path, workers: int, limit: int) -> dict[str, tuple[float, float]]:
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
    return {"cnnspec": _rate(ours, limit), "reference": _rate(reference, limit)}


def keras_rates(folder: Path, workers: int, limit: int) -> dict[str, tuple[float, float]]:
    """cnnspec, tf.data with the same decode, tf.data with TF's default fast DCT: the
    same-work reference decodes JPEG with the accurate integer DCT, as Pillow and cnnspec
    do (the fast one is up to 5 grey levels off), so that is the target's denominator."""
    import tensorflow as tf

    from cnnspec.data import index, parse_ops
    from cnnspec.data.loading import keras_batches

    samples = index(str(folder), (SIZE, SIZE, 3), "classify")
    ours = keras_batches(
        samples, BATCH, train=True, seed=0, ops=parse_ops(["flip"]), workers=workers
    )
    paths = [str(p) for p in samples.reader.paths]

    def reference(dct_method: str):
        def decode(path, label):
            raw = tf.io.read_file(path)
            image = tf.io.decode_jpeg(raw, channels=3, dct_method=dct_method)
            image = tf.image.resize(image, (SIZE, SIZE))  # float32, as ours
            return tf.image.random_flip_left_right(image) / 255.0, label

        return (
            tf.data.Dataset.from_tensor_slices((paths, samples.y))
            .shuffle(len(paths))
            .map(decode, num_parallel_calls=max(workers, 1))
            .batch(BATCH)
            .prefetch(2)
            .as_numpy_iterator()
        )

    return {
        "cnnspec": _rate(ours, limit),
        "reference": _rate(reference("INTEGER_ACCURATE"), limit),
        "reference_fast_dct": _rate(reference(""), limit),
    }


def alternate(measure, rounds: int) -> dict[str, tuple[float, float]]:
    """Each side's median (wall, CPU) rate over `rounds` calls of `measure` (each call runs
    every side once, in turn)."""
    runs = [measure() for _ in range(rounds)]
    return {
        side: tuple(statistics.median(run[side][i] for run in runs) for i in (0, 1))
        for side in runs[0]
    }


def compare(name: str, rates: dict, goal: float, rows: list) -> None:
    """Print cnnspec's rates against the reference's and add a target row per clock."""
    ours, ref = rates["cnnspec"], rates["reference"]
    for i, clock in enumerate(("wall", "CPU")):
        others = ", ".join(f"{k} {v[i]:.0f}" for k, v in rates.items() if k != "cnnspec")
        print(
            f"{name}: cnnspec {ours[i]:.0f} images per {clock} second, {others}: "
            f"ratio {ours[i] / ref[i]:.3f}"
        )
        rows.append(
            target_row(
                f"{name} input pipeline: cnnspec / reference (images per {clock} second)",
                ours[i] / ref[i],
                f">= {goal}",
                ours[i] / ref[i] >= goal,
            )
        )


def measure_memory(
    folders: dict, sizes: list, workers: int, runs: int, rows: list, data: dict
) -> None:
    """Each size `runs` times, the sizes in turn; the medians of the peaks are compared (a
    peak is a 0.2 s sample of transient highs, about 100 MiB apart from run to run)."""
    measured: dict[int, list] = {n: [] for n in sizes}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(runs):
            for n in sizes:
                rss, pss, seconds = peak_train_memory(folders[n], workers, Path(work))
                measured[n].append((rss, pss, seconds))
                print(
                    f"train 1 epoch on {n} images: peak RSS {rss / 2**20:.0f} MiB, "
                    f"PSS {pss / 2**20:.0f} MiB (process tree), {seconds:.0f} s",
                    flush=True,
                )
    memory = {
        n: tuple(statistics.median(m[i] for m in v) for i in range(3)) for n, v in measured.items()
    }
    if runs > 1:
        for n, (rss, pss, _) in memory.items():
            print(
                f"median of {runs} at {n} images: RSS {rss / 2**20:.0f} MiB, PSS {pss / 2**20:.0f} MiB"
            )
    for i, kind in enumerate(("RSS", "PSS")):
        small, large = memory[sizes[0]][i], memory[sizes[-1]][i]
        ratio = large / small
        print(f"peak {kind} ratio {sizes[-1]}/{sizes[0]} = {ratio:.3f}")
        rows.append(
            target_row(
                f"peak summed {kind} of the tree, train 1 epoch, {sizes[-1]} / {sizes[0]} "
                f"images ({large / 2**20:.0f} / {small / 2**20:.0f} MiB)",
                ratio,
                "<= 1.1, < 3 GiB",
                ratio <= 1.1 and large < 3 * 2**30,
            )
        )
    data["peak_rss"] = {str(n): m[0] for n, m in memory.items()}
    data["peak_pss"] = {str(n): m[1] for n, m in memory.items()}
    data["train_seconds"] = {str(n): m[2] for n, m in memory.items()}
    data["memory_runs"] = {str(n): v for n, v in measured.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="folder sizes, comma-separated")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batches", type=int, default=100, help="batches per throughput run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=9,
        help="throughput runs of each side (medians; 3 read 0.88-1.02)",
    )
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "cnnspec-bench"))
    parser.add_argument("--no-keras", action="store_true")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-memory", action="store_true", help="throughput only")
    parser.add_argument(
        "--memory-runs", type=int, default=3, help="`cnnspec train` runs of each size (medians)"
    )
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    root = Path(args.root)
    folders = {n: write_folder(n, root / f"folder-{n}") for n in sizes}
    rows, data = [], {"machine": machine(), "workers": args.workers, "sizes": sizes}
    if not args.no_memory:
        measure_memory(folders, sizes, args.workers, args.memory_runs, rows, data)
    folder = folders[sizes[0]]
    if not args.no_torch:
        rates = alternate(lambda: torch_rates(folder, args.workers, args.batches), args.rounds)
        compare("torch", rates, 0.95, rows)
        data["torch"] = rates
    if not args.no_keras:
        rates = alternate(lambda: keras_rates(folder, args.workers, args.batches), args.rounds)
        compare("Keras", rates, 0.90, rows)
        data["keras"] = rates
    data["report_rows"] = rows
    write_json(args.json, data)


if __name__ == "__main__":
    main()
