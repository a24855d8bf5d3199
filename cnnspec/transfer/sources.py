"""Where a transfer `source` lives on disk. Nothing here downloads: a missing file is an error
that names the exact file and the folder the framework itself would look in.

    torchvision:resnet18   $TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth (torch.hub.get_dir();
                           the file name is the one in torchvision's default weights enum)
    keras:VGG16            $KERAS_HOME/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5
                           (KERAS_HOME defaults to ~/.keras, as keras.utils.get_file does)
    "path/file.pth"        .pt/.pth (torch.load(weights_only=True)), .safetensors, .keras,
                           .weights.h5 / .h5; relative paths are read next to the spec first
    "runs/exp1"            a `cnnspec train` output folder: its best checkpoint
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpecError, did_you_mean

FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".keras", ".h5", ".hdf5")
# `cnnspec train --out DIR` writes these; the first that exists is the run's best checkpoint.
RUN_CHECKPOINTS = ("best.safetensors", "best.weights.h5", "best.pt", "best.pth", "best.keras")

# keras.applications: function name -> the stem of its weight files, which keras names
# f"{stem}_weights_tf_dim_ordering_tf_kernels.h5" and "..._notop.h5" (vgg16.py, resnet.py ...).
KERAS_APPS = {
    "VGG16": "vgg16",
    "VGG19": "vgg19",
    "ResNet50": "resnet50",
    "ResNet101": "resnet101",
    "ResNet152": "resnet152",
    "ResNet50V2": "resnet50v2",
    "ResNet101V2": "resnet101v2",
    "ResNet152V2": "resnet152v2",
    "Xception": "xception",
    "InceptionV3": "inception_v3",
}


@dataclass(frozen=True)
class Source:
    """A resolved source: the file to read and what wrote it."""

    text: str  # as written in the spec
    path: Path
    origin: str  # "torchvision", "keras", "file" or "run"
    # How the source flattens a feature map before a dense layer: torchvision (and any torch
    # model) flattens NCHW as C,H,W; Keras and cnnspec's own backends flatten H,W,C.
    flatten: str = "hwc"
    alternatives: tuple[Path, ...] = ()


def resolve(text: str, span=None, spec_path: str | None = None, need_top: bool = False) -> Source:
    """The file for a source string, or a SpecError (E410 unknown, E411 missing)."""
    if text.startswith("torchvision:"):
        return _torchvision(text, text.split(":", 1)[1], span)
    if text.startswith("keras:"):
        return _keras(text, text.split(":", 1)[1], span, need_top)
    return _path(text, span, spec_path)


def torch_checkpoints_dir() -> Path:
    """torch.hub's cache: $TORCH_HOME/hub/checkpoints, else $XDG_CACHE_HOME/torch/hub/..."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def keras_models_dir() -> Path:
    """keras.utils.get_file's cache: $KERAS_HOME/models, else ~/.keras/models."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(os.path.expanduser(home)) / "models"


def torchvision_file(name: str, span=None) -> str:
    """The file name torchvision would download for `name`'s default weights."""
    known, url = _torchvision_lookup(name)
    if url is None:
        low = {k.lower(): k for k in known}
        if name.lower() in low:
            return torchvision_file(low[name.lower()], span)
        raise SpecError(
            "E410",
            f"torchvision has no model '{name}'",
            span,
            hint=did_you_mean(name, known) or "see torchvision.models.list_models()",
        )
    return url.rsplit("/", 1)[-1]


LOOKUP = """
import json, sys
import torchvision.models as tvm
name = sys.argv[1]
known = tvm.list_models()
url = tvm.get_model_weights(name).DEFAULT.url if name in known else None
print(json.dumps([known, url]))
"""


@functools.cache
def _torchvision_lookup(name: str) -> tuple[tuple[str, ...], str | None]:
    """(model names, default weights URL) from torchvision's weight enums. Importing torchvision
    after TensorFlow crashes the process (a native library clash), so with TensorFlow loaded
    the enums are read in a child process; neither way touches the network."""
    import sys

    if "tensorflow" in sys.modules or "keras" in sys.modules:
        import subprocess

        done = subprocess.run(
            [sys.executable, "-c", LOOKUP, name],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        known, url = json.loads(done.stdout.strip().splitlines()[-1])
        return tuple(known), url
    import torchvision.models as tvm

    known = tuple(tvm.list_models())
    return known, tvm.get_model_weights(name).DEFAULT.url if name in known else None


def _torchvision(text: str, name: str, span) -> Source:
    fname = torchvision_file(name, span)
    folder = torch_checkpoints_dir()
    path = folder / fname
    if not path.is_file():
        raise SpecError(
            "E411",
            f"the weights for {text} are not on this machine: {fname}",
            span,
            expected=str(path),
            hint=f"nothing is downloaded; copy {fname} (torchvision's default "
            f"weights for {name}) into {folder}/ (or set TORCH_HOME)",
        )
    return Source(text, path, "torchvision", flatten="chw")


def keras_files(name: str, span=None) -> tuple[str, str]:
    """(full, no-top) file names keras.applications would download for `name`."""
    app = {k.lower(): k for k in KERAS_APPS}.get(name.lower())
    if app is None:
        raise SpecError(
            "E410",
            f"no weights file is known for keras:{name}",
            span,
            expected=", ".join(KERAS_APPS),
            hint=did_you_mean(name, KERAS_APPS),
        )
    stem = KERAS_APPS[app]
    return (
        f"{stem}_weights_tf_dim_ordering_tf_kernels.h5",
        f"{stem}_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )


def _keras(text: str, name: str, span, need_top: bool) -> Source:
    full, notop = keras_files(name, span)
    folder = keras_models_dir()
    # Without the classifier the no-top file suffices; the full file holds it too.
    wanted = [full] if need_top else [notop, full]
    for fname in wanted:
        if (folder / fname).is_file():
            return Source(text, folder / fname, "keras", flatten="hwc")
    raise SpecError(
        "E411",
        f"the weights for {text} are not on this machine: {wanted[0]}",
        span,
        expected=str(folder / wanted[0]),
        hint=f"nothing is downloaded; copy {wanted[0]} (keras.applications "
        f"weights for {name}) into {folder}/ (or set KERAS_HOME)",
    )


def _path(text: str, span, spec_path: str | None) -> Source:
    raw = Path(os.path.expanduser(text))
    candidates = [raw]
    if not raw.is_absolute() and spec_path:
        candidates.insert(0, Path(spec_path).parent / raw)
    path = next((c for c in candidates if c.exists()), None)
    if path is None:
        where = " or ".join(str(c) for c in candidates)
        raise SpecError(
            "E411",
            f"the source '{text}' does not exist",
            span,
            expected=where,
            hint="give a checkpoint (.safetensors, .pt, .pth, .keras, .weights.h5) "
            "or a `cnnspec train --out` folder; or torchvision:NAME / keras:NAME",
        )
    if path.is_dir():
        return Source(text, _run_checkpoint(path, text, span), "run")
    if not path.name.endswith(FILE_SUFFIXES):
        raise SpecError(
            "E412",
            f"cannot read weights from '{path.name}'",
            span,
            expected=", ".join(FILE_SUFFIXES),
        )
    return Source(text, path, "file")


def _run_checkpoint(folder: Path, text: str, span) -> Path:
    """The best checkpoint of a `cnnspec train` run: named in result.json, else by file name."""
    result = folder / "result.json"
    if result.is_file():
        try:
            data = json.loads(result.read_text())
        except (OSError, ValueError):
            data = {}
        for key in ("best_checkpoint", "checkpoint", "weights"):
            value = data.get(key) if isinstance(data, dict) else None
            if isinstance(value, str) and (folder / value).is_file():
                return folder / value
            if isinstance(value, str) and Path(value).is_file():
                return Path(value)
    for fname in RUN_CHECKPOINTS:
        if (folder / fname).is_file():
            return folder / fname
    found = sorted(p.name for p in folder.iterdir() if p.name.endswith(FILE_SUFFIXES))
    raise SpecError(
        "E411",
        f"the run folder '{text}' holds no checkpoint",
        span,
        expected=" or ".join(RUN_CHECKPOINTS[:2]),
        received=", ".join(found) or "no weight files",
        hint="point the source at the checkpoint file itself",
    )
