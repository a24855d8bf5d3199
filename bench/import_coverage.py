"""`cnnspec import` of every torchvision CNN classifier and every keras.applications model.

    python bench/import_coverage.py [--only resnet18 keras:Xception] [--torch | --keras]
                                    [--write BENCHMARKS.md]

For each model: import it at a small input (64x64, or the model's minimum, or 224x224 where an
adaptive pool is a fixed window only there), compare the spec's parameter counts with the
source's, load the source's weights into the built spec (batch-norm statistics and biases
randomised first, so that a swapped tensor shows) and compare the outputs (1e-5 torch, 1e-4
Keras). A model that cannot be imported gives its E-coded error, which names the construct.
The table goes to stdout, and with --write into its own section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import time
from pathlib import Path

import torch
import torchvision  # before TensorFlow: the other order segfaults here)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's cnnspec, not an installed one
sys.path.insert(0, str(ROOT / "tests"))  # the parity tests' weight randomiser
cnnspec = importlib.import_module("cnnspec")
random_weights = importlib.import_module("random_weights")

TRANSFORMERS = ("maxvit", "swin", "vit_")
SMALL = 64
# sizes other than SMALL: the model's minimum, or where an adaptive pool is a fixed window
SIZES = {
    "inception_v3": 75,
    "alexnet": 224,
    "vgg": 224,
    "InceptionV3": 75,
    "InceptionResNetV2": 75,
    "Xception": 71,
    "NASNetLarge": 331,
    "NASNetMobile": 224,
}
BEGIN, END = "<!-- import-coverage:begin -->", "<!-- import-coverage:end -->"


def torch_models() -> list[str]:
    names = torchvision.models.list_models(module=torchvision.models)
    return [f"torchvision:{n}" for n in names if not n.startswith(TRANSFORMERS)]


def keras_models() -> list[str]:
    import inspect

    import keras

    return [
        f"keras:{n}"
        for n, f in inspect.getmembers(keras.applications, inspect.isfunction)
        if n[:1].isupper()
    ]


def size_of(source: str) -> int:
    name = source.partition(":")[2]
    return next(
        (s for k, s in SIZES.items() if name == k or (k.islower() and name.startswith(k))), SMALL
    )


def check(source: str) -> dict:
    """One row: lines, counts equal, outputs equal, error."""
    from cnnspec.errors import SpecError
    from cnnspec.importer import read_source, write

    size = size_of(source)
    row = {"model": source, "size": size, "lines": "", "counts": "", "outputs": "", "error": ""}
    start = time.perf_counter()
    try:
        graph, framework_model = read_source(source, (size, size, 3))
        text = write(graph)
    except SpecError as err:
        row["error"] = f"{err.code}: {err.message}"
        return _done(row, start)
    except Exception as exc:  # noqa: BLE001  (a crash is a row of the table, not the end)
        row["error"] = f"crash: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        return _done(row, start)
    model = cnnspec.compile_text(text)
    row["lines"] = len(text.splitlines())
    row["counts"] = (model.trainable, model.non_trainable) == tuple(graph.counts)
    try:
        row["outputs"] = (_torch_equal if source.startswith("torchvision:") else _keras_equal)(
            model, framework_model, size
        )
    except Exception as exc:  # noqa: BLE001
        row["outputs"] = False
        row["error"] = f"outputs: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    return _done(row, start)


def _done(row: dict, start: float) -> dict:
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def _torch_equal(model, module, size: int) -> bool:
    from cnnspec.backends.torch import build, load_torchvision_state_dict

    random_weights.randomise_torch(module, 7)
    net = build(model, logits=True).eval()
    report = load_torchvision_state_dict(net, model, module.state_dict())
    if not report.ok:
        return False
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = net(x), module(x)
    return bool(torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5))


def _keras_equal(model, app, size: int) -> bool:
    import numpy as np

    from cnnspec.backends.keras import build
    from cnnspec.convert import load_keras_applications_weights

    random_weights.randomise_keras_batch_norm(app, np.random.default_rng(7))
    kmodel = build(model)
    load_keras_applications_weights(kmodel, model, app)
    x = np.random.default_rng(2).normal(size=(2, size, size, 3)).astype("float32")
    ours, theirs = np.asarray(kmodel(x)), np.asarray(app(x))
    return bool(np.allclose(ours, theirs, rtol=1e-4, atol=1e-4))


def table(rows: list[dict]) -> list[str]:
    def mark(v):
        return "yes" if v is True else "no" if v is False else ""

    lines = [
        "| model | input | spec lines | counts equal | outputs equal | s | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        error = r["error"].replace("|", "\\|")
        lines.append(
            f"| {r['model']} | {r['size']} | {r['lines']} | {mark(r['counts'])} | "
            f"{mark(r['outputs'])} | {r['seconds']} | {error} |"
        )
    return lines


def misses(rows: list[dict]) -> str:
    """'4 need layer norm over channels (convnext_tiny, ...)': the misses by what is missing."""
    by: dict[str, list[str]] = {}
    for r in rows:
        if r["error"]:
            found = re.search(r"\): (.*?) is a construct", r["error"])
            why = found.group(1) if found else r["error"]
            by.setdefault(re.sub(r" \(.*", "", why), []).append(r["model"].partition(":")[2])
    return "; ".join(f"{len(ms)} need {why} ({', '.join(ms)})" for why, ms in by.items())


def write_section(path: Path, rows: list[dict], note: str) -> None:
    exact = sum(1 for r in rows if r["counts"] is True and r["outputs"] is True)
    missed = misses(rows)
    body = [
        BEGIN,
        "## Import coverage (`bench/import_coverage.py`)",
        "",
        f"{exact} of {len(rows)} imported exactly (counts and outputs equal). {note}",
        "",
        *(
            [f"Misses, by the construct the language lacks so far (E417): {missed}.", ""]
            if missed
            else []
        ),
        *table(rows),
        END,
    ]
    text = path.read_text() if path.exists() else ""
    if BEGIN in text:
        text = re.sub(
            re.escape(BEGIN) + ".*?" + re.escape(END),
            lambda _: "\n".join(body),
            text,
            flags=re.DOTALL,
        )
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(body) + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomically: a stopped run leaves the old file


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", help="sources (resnet18 means torchvision:resnet18)")
    p.add_argument("--torch", action="store_true", help="torchvision models only")
    p.add_argument("--keras", action="store_true", help="keras.applications models only")
    p.add_argument("--write", metavar="MD", help="write the table into this markdown file")
    p.add_argument("--note", default="", help="a sentence for the table's heading (the load)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.only:
        sources = [s if ":" in s else f"torchvision:{s}" for s in args.only]
    else:
        sources = ([] if args.keras else torch_models()) + ([] if args.torch else keras_models())
    rows = []
    for source in sources:
        row = check(source)
        rows.append(row)
        print(table([row])[-1], flush=True)
        if source.startswith("keras:"):
            import keras

            keras.backend.clear_session()
    if args.write:
        write_section(Path(args.write), rows, args.note)
    exact = sum(1 for r in rows if r["counts"] is True and r["outputs"] is True)
    print(f"{exact} of {len(rows)} imported exactly", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
