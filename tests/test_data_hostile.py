"""Data readers against hostile data (issue 14): bad boxes, empty images and sets, a split
that leaves nothing to train on, claimed sizes, decompression bombs, link cycles. Each is a
DataError naming the file or annotation, never training on it or a MemoryError."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnspec.data import DataError, Dataset, load
from cnnspec.train.session import mask_paths, read_images

ROOT = Path(__file__).resolve().parent.parent


def _coco(tmp_path: Path, bbox) -> Path:
    (tmp_path / "images").mkdir()
    Image.new("L", (8, 8), 128).save(tmp_path / "images" / "a.png")
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": bbox}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(doc))  # json writes NaN as the literal NaN, as a user's may
    return path


@pytest.mark.parametrize(
    "bbox, why",
    [
        ([float("nan"), 1, 2, 2], "not a number"),
        ([1, 1, -3, 2], "no area"),
        ([1, 1, 0, 0], "no area"),
        ([20, 20, 5, 5], "outside the 8x8 image"),
    ],
)
def test_bad_coco_boxes_are_refused_naming_the_file(tmp_path, bbox, why):
    path = _coco(tmp_path, bbox)
    with pytest.raises(DataError, match=why) as err:
        load(str(path), (8, 8, 1), "detect")
    assert str(path) in err.value.message and "a.png" in err.value.message


def test_a_box_a_pixel_past_the_edge_is_rounding(tmp_path):
    data = load(str(_coco(tmp_path, [0, 0, 8.5, 8.5])), (8, 8, 1), "detect")
    assert data.boxes[0].tolist() == [0.0, 0.0, 1.0, 1.0]


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_npz_nan_boxes_are_refused(tmp_path):
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [np.nan, 0, 1, 1]], np.float32)
    path = _npz(tmp_path / "d.npz", x=np.zeros((2, 8, 8, 1), np.uint8), y=[0, 0], boxes=boxes)
    with pytest.raises(DataError, match=r"boxes\[1\].*not a number"):
        load(path, (8, 8, 1), "detect")


def test_zero_by_zero_images_are_refused(tmp_path):
    path = _npz(tmp_path / "d.npz", x=np.zeros((2, 0, 0, 1), np.uint8), y=[0, 1])
    with pytest.raises(DataError, match="0x0-pixel images"):
        load(path, (8, 8, 1), "classify")


def test_zero_images_are_refused(tmp_path):
    path = _npz(
        tmp_path / "d.npz",
        x=np.zeros((0, 8, 8, 1), np.uint8),
        y=np.zeros(0, np.int64),
        classes=["a", "b"],
    )
    with pytest.raises(DataError, match="holds no images"):
        load(path, (8, 8, 1), "classify")


def test_a_split_that_leaves_no_training_images_is_refused():
    data = Dataset(x=np.zeros((6, 4, 4, 1)), y=[0, 0, 0, 1, 1, 1], classes=["a", "b"])
    with pytest.raises(DataError, match="leaves no training images out of 6"):
        data.split(0.99)


def test_train_with_validation_split_099_exits_1(tmp_path, capsys):
    from cnnspec.cli import main

    spec = tmp_path / "s.cnn"
    spec.write_text(
        "input 8x8x1\nflatten\ndense 2 softmax\ncompile {\n  epochs 1; validation_split 0.99\n}\n"
    )
    data = _npz(tmp_path / "d.npz", x=np.zeros((4, 8, 8, 1), np.uint8), y=[0, 0, 1, 1])
    code = main(
        ["train", str(spec), "--data", data, "--out", str(tmp_path / "r"), "--progress", "off"]
    )
    assert code == 1 and "leaves no training images" in capsys.readouterr().err
    assert not (tmp_path / "r" / "result.json").exists()


def test_npz_claiming_gigabytes_is_refused_from_its_header(tmp_path):
    """The header claims 5000x1000x1000 float32 (18.6 GiB) over a few bytes of data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (5000, 1000, 1000, 1)}
    )
    path = tmp_path / "big.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + b"\0" * 64)
        y = io.BytesIO()
        np.save(y, np.zeros(5000, np.int64))
        zf.writestr("y.npy", y.getvalue())
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"would take 18\.6 GiB"):
        load(str(path), (8, 8, 1), "classify")
    assert time.perf_counter() - t0 < 5


def test_shapes_n_too_large_is_refused():
    with pytest.raises(DataError, match="shapes n=100000000 .* would take"):
        load("shapes", (32, 32, 1), "classify", n="100000000")
    with pytest.raises(DataError, match="must be a number"):
        load("shapes", (32, 32, 1), "classify", n="10**8")


def test_two_links_to_dot_do_not_make_the_walk_explode(tmp_path):
    root = tmp_path / "data"
    for cls in ("a", "b"):
        folder = root / cls
        folder.mkdir(parents=True)
        Image.new("L", (8, 8), 64).save(folder / "1.png")
        for link in ("x", "y"):
            os.symlink(".", folder / link)
    # in a child process: before the fix the walk never ended, and a hang is no failure
    code = (
        f"from cnnspec.data import load; d = load({str(root)!r}, (8, 8, 1), "
        "'classify'); print(len(d), d.classes)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )
    assert done.stdout.strip() == "2 ['a', 'b']", done.stderr[-1000:]


def test_predict_refuses_a_decompression_bomb(tmp_path, monkeypatch):
    """Pillow's bomb guard, reached with a small image by lowering its limit (a real bomb
    would take hundreds of MB to make): predict must give a DataError, as train does."""
    path = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match="bomb.png"):
        read_images([str(path)], (8, 8, 1))


# --- predicted mask files ---------------------------------------------------------------------


def test_two_inputs_with_one_stem_get_two_masks(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    paths = mask_paths(
        [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.jpg")], str(tmp_path / "out")
    )
    assert [p.name for p in paths] == ["x.mask.png", "x.2.mask.png"]


def test_an_existing_mask_is_not_replaced(tmp_path):
    (tmp_path / "x.mask.png").write_bytes(b"mine")
    with pytest.raises(DataError, match="x.mask.png exists"):
        mask_paths([str(tmp_path / "x.png")], None)
    assert mask_paths([str(tmp_path / "x.png")], None, overwrite=True)[0].name == "x.mask.png"
    assert (tmp_path / "x.mask.png").read_bytes() == b"mine"


def test_predict_never_replaces_a_mask_and_two_stems_get_two_files(tmp_path, capsys):
    from safetensors.torch import save_file

    from cnnspec.backends.torch import build
    from cnnspec.cli import main
    from cnnspec.compiler import compile_file

    spec = tmp_path / "seg.cnn"
    spec.write_text(
        "input 8x8x1\nconv 4 3x3 same relu\nconv 2 1x1 softmax\ncompile {\n  loss ce_dice\n}\n"
    )
    weights = tmp_path / "w.safetensors"
    save_file(
        {k: v.contiguous() for k, v in build(compile_file(spec)).state_dict().items()}, weights
    )
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.new("L", (8, 8), 200).save(tmp_path / folder / "x.png")
    images = [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png")]
    out = tmp_path / "masks"
    argv = [
        "predict",
        str(spec),
        *images,
        "--weights",
        str(weights),
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["x.2.mask.png", "x.mask.png"]
    (out / "x.mask.png").write_bytes(b"mine")
    assert main(argv) == 1
    assert "x.mask.png exists" in capsys.readouterr().err
    assert (out / "x.mask.png").read_bytes() == b"mine"
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "x.mask.png").read_bytes()[:4] == b"\x89PNG"
