"""Tests for cnnspec.data: offline sources, file readers/writers, augmentation, batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnspec.data import (
    DataError,
    Dataset,
    augment,
    augment_batch,
    batches,
    generate_shapes,
    load,
    parse_ops,
    resize,
    to_channels,
    write_shapes,
)
from cnnspec.data.imaging import resize_masks
from cnnspec.data.shapes import boxes_from_masks

ROOT = Path(__file__).resolve().parents[1]
PIXEL = 1.0 / 255 + 1e-6  # what an 8-bit PNG round trip may change a pixel by


@pytest.fixture(scope="module")
def shapes32():
    """The generator output the writer round-trip tests compare against."""
    return generate_shapes(n=30, size=(32, 32), seed=7, empty_fraction=0.2)


def raises_naming(path, call, *args, **kwargs) -> DataError:
    """Assert `call` raises DataError whose message names `path`; return the error."""
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    assert str(path) in str(info.value), f"{path} not named in: {info.value}"
    return info.value


# --- package hygiene ---------------------------------------------------------------------


def test_loading_never_imports_a_framework():
    code = (
        "import sys\n"
        "import cnnspec.data as d\n"
        "lazy = [m for m in ('PIL', 'sklearn') if m in sys.modules]\n"
        "d.load('digits', (8, 8, 1), 'classify')\n"
        "d.load('shapes', (16, 16, 3), 'detect', n=4)\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules]\n"
        "print(lazy, heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] []"


def test_data_error_carries_a_hint():
    error = DataError("bad thing", hint="do this")
    assert str(error) == "bad thing" and error.hint == "do this"
    assert issubclass(DataError, Exception)


# --- shapes generator --------------------------------------------------------------------


def test_shapes_same_seed_is_identical_and_other_seed_differs():
    first = load("shapes", (32, 32, 3), "segment", seed=5, n=40, empty_fraction=0.1)
    again = load("shapes", (32, 32, 3), "segment", seed=5, n=40, empty_fraction=0.1)
    other = load("shapes", (32, 32, 3), "segment", seed=6, n=40, empty_fraction=0.1)
    for name in ("x", "y", "boxes", "masks", "present"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    assert not np.array_equal(first.x, other.x)
    assert not np.array_equal(first.masks, other.masks)
    assert not np.array_equal(first.y, other.y)


def test_shapes_boxes_are_the_tight_box_of_the_mask():
    data = generate_shapes(n=60, size=(24, 40), seed=1, empty_fraction=0.1)
    height, width = 24, 40
    for mask, box, present in zip(data.masks, data.boxes, data.present):
        rows, cols = np.nonzero(mask)
        if present == 0:
            assert len(rows) == 0 and np.all(box == 0)
            continue
        x0, y0, x1, y1 = box * [width, height, width, height]
        assert cols.min() == pytest.approx(x0) and cols.max() + 1 == pytest.approx(x1)
        assert rows.min() == pytest.approx(y0) and rows.max() + 1 == pytest.approx(y1)
        assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1


def test_shapes_labels_agree_with_masks_and_classes_are_balanced():
    data = generate_shapes(n=300, size=(16, 16), seed=2)
    assert data.classes == ["background", "circle", "square", "triangle"]
    for mask, label in zip(data.masks, data.y):
        assert set(np.unique(mask)) == {0, label}
    counts = np.bincount(data.y, minlength=4)[1:]
    assert counts.max() - counts.min() <= 1 and counts.sum() == 300


def test_shapes_are_drawn_the_right_shape():
    # How much of its (square) box a shape fills tells the rasterisers apart:
    # triangle ~1/2, circle ~pi/4, square ~1.
    data = generate_shapes(n=150, size=(64, 64), seed=3)
    fill = {}
    for mask, box, label in zip(data.masks, data.boxes, data.y):
        width, height = (box[2] - box[0]) * 64, (box[3] - box[1]) * 64
        assert abs(width - height) <= 2, "every shape is as wide as it is tall"
        area = width * height
        fill.setdefault(data.classes[label], []).append((mask > 0).sum() / area)
    means = {name: np.mean(values) for name, values in fill.items()}
    assert means["triangle"] == pytest.approx(0.5, abs=0.08)
    assert means["circle"] == pytest.approx(np.pi / 4, abs=0.06)
    assert means["square"] > 0.95


def test_shapes_stand_out_from_the_background():
    data = load("shapes", (32, 32, 1), "segment", n=40, seed=4)
    for image, mask in zip(data.x[..., 0], data.masks):
        assert abs(image[mask > 0].mean() - image[mask == 0].mean()) > 0.2


def test_shapes_empty_fraction_and_task_views():
    seg = load("shapes", (20, 20, 3), "segment", n=100, empty_fraction=0.1)
    assert seg.present.sum() == 90 and seg.masks[seg.present == 0].max() == 0
    det = load("shapes", (20, 20, 3), "detect", n=100, empty_fraction=0.1)
    assert det.classes == ["circle", "square", "triangle"] and det.masks is None
    assert np.array_equal(det.y[det.present > 0], seg.y[seg.present > 0] - 1)
    assert det.task == "detect" and len(det) == 100
    cls = load("shapes", (20, 20, 3), "classification", n=100, empty_fraction=0.1)
    assert len(cls) == 90 and cls.task == "classify" and np.all(cls.present == 1)
    binary = load("shapes", (20, 20, 3), "segment", n=20, binary=True)
    assert binary.classes == ["background", "foreground"] and set(np.unique(binary.masks)) == {0, 1}


def test_shapes_use_the_network_input_size_and_channels():
    data = load("shapes", (24, 40, 1), "segment", n=5)
    assert data.x.shape == (5, 24, 40, 1) and data.x.dtype == np.float32
    assert data.masks.shape == (5, 24, 40) and data.masks.dtype == np.int64
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0


# --- digits ------------------------------------------------------------------------------


def test_digits_are_resized_scaled_and_complete():
    data = load("digits", (16, 16, 3), "classify")
    assert data.x.shape == (1797, 16, 16, 3) and data.x.dtype == np.float32
    assert data.x.min() == 0.0 and data.x.max() == pytest.approx(1.0)
    assert data.y.dtype == np.int64 and set(data.y.tolist()) == set(range(10))
    assert data.classes == [str(d) for d in range(10)]
    assert np.array_equal(data.x[..., 0], data.x[..., 2])  # grey repeated to RGB
    native = load("digits", (8, 8, 1), "classify")
    assert sorted(np.unique(native.x * 16).round(4).tolist()) == list(range(17))


# --- writers and readers round-trip ------------------------------------------------------


def test_image_folder_round_trip(tmp_path):
    truth = generate_shapes(n=30, size=(32, 32), seed=7)
    write_shapes(tmp_path, "folder", n=30, size=32, seed=7)
    data = load(str(tmp_path), (32, 32, 3), "classify")
    assert data.classes == ["circle", "square", "triangle"]
    order = np.argsort(truth.y, kind="stable")  # files sort by class, then by index
    assert np.array_equal(data.y, truth.y[order] - 1)
    assert np.abs(data.x - truth.x[order]).max() <= PIXEL


def test_image_folder_classes_match_torchvision(tmp_path):
    datasets = pytest.importorskip("torchvision.datasets")
    write_shapes(tmp_path, "folder", n=12, size=16, seed=1)
    (tmp_path / "circle" / "nested").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "circle" / "nested" / "a.png")
    reference = datasets.ImageFolder(str(tmp_path))
    data = load(str(tmp_path), (16, 16, 3), "classify")
    assert data.classes == reference.classes
    assert data.y.tolist() == reference.targets


def test_segmentation_pairs_round_trip(tmp_path, shapes32):
    write_shapes(tmp_path, "segmentation", n=30, size=32, seed=7, empty_fraction=0.2)
    data = load(str(tmp_path), (32, 32, 3), "segment")
    assert data.classes == shapes32.classes
    assert np.array_equal(data.masks, shapes32.masks)
    assert np.array_equal(data.y, shapes32.y)
    assert np.array_equal(data.present, shapes32.present)
    assert np.allclose(data.boxes, shapes32.boxes, atol=0.5 / 32)
    assert np.abs(data.x - shapes32.x).max() <= PIXEL


@pytest.mark.parametrize("fmt", ["coco", "voc"])
def test_detection_annotations_round_trip(tmp_path, shapes32, fmt):
    write_shapes(tmp_path, fmt, n=30, size=32, seed=7, empty_fraction=0.2)
    data = load(str(tmp_path), (32, 32, 3), "detect")
    present = shapes32.present > 0
    assert data.classes == ["circle", "square", "triangle"]
    assert np.array_equal(data.present, shapes32.present)
    assert np.array_equal(data.y[present], shapes32.y[present] - 1)
    assert np.allclose(
        data.boxes, shapes32.boxes, atol=0.5 / 32
    )  # within half a pixel: an off-by-one fails
    assert np.abs(data.x - shapes32.x).max() <= PIXEL


def test_detection_boxes_survive_resizing(tmp_path, shapes32):
    write_shapes(tmp_path, "coco", n=30, size=32, seed=7, empty_fraction=0.2)
    data = load(str(tmp_path / "annotations.json"), (20, 48, 1), "detect")
    assert data.x.shape == (30, 20, 48, 1)
    assert np.allclose(data.boxes, shapes32.boxes, atol=1e-6)


def test_coco_keeps_the_largest_object(tmp_path):
    Image.new("RGB", (40, 20)).save(tmp_path / "a.png")
    doc = {
        "images": [{"id": 3, "file_name": "a.png", "width": 40, "height": 20}],
        "categories": [{"id": 9, "name": "zebra"}, {"id": 2, "name": "ant"}],
        "annotations": [
            {"image_id": 3, "category_id": 2, "bbox": [0, 0, 4, 4]},
            {"image_id": 3, "category_id": 9, "bbox": [10, 5, 20, 10]},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    data = load(str(tmp_path / "ann.json"), (20, 40, 3), "detect")
    assert data.classes == ["ant", "zebra"]  # ordered by category id
    assert data.y.tolist() == [1]
    assert np.allclose(data.boxes[0], [0.25, 0.25, 0.75, 0.75])


def test_format_option_overrides_detection(tmp_path):
    write_shapes(tmp_path, "segmentation", n=6, size=16, seed=0)
    data = load(str(tmp_path), (16, 16, 3), "classify", format="segmentation")
    assert len(data) == 6 and data.classes == ["circle", "square", "triangle"]
    with pytest.raises(DataError, match="format"):
        load(str(tmp_path), (16, 16, 3), "classify", format="yolo")


# --- npz ---------------------------------------------------------------------------------


def test_npz_uint8_nhwc(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    y = np.arange(10) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y, classes=np.array(["a", "b", "c", "d"]))
    data = load(str(tmp_path / "d.npz"), (8, 8, 3), "classify")
    assert np.allclose(data.x, x / 255.0) and data.y.tolist() == y.tolist()
    assert data.classes == ["a", "b", "c", "d"]


def test_npz_float_nhw_becomes_channels(tmp_path):
    x = np.linspace(0, 1, 6 * 5 * 5, dtype=np.float32).reshape(6, 5, 5)
    np.savez(tmp_path / "g.npz", x=x, y=np.array([0, 1, 2, 0, 1, 2]))
    data = load(str(tmp_path / "g.npz"), (10, 10, 3), "classify")
    assert data.x.shape == (6, 10, 10, 3) and data.classes == ["0", "1", "2"]
    assert np.array_equal(data.x[..., 0], data.x[..., 1])


def test_npz_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((5, 4, 4), np.uint8), y=np.zeros(4, int))
    raises_naming(path, load, str(path), (4, 4, 1), "classify")
    np.savez(path, x=np.zeros((5, 4, 4), np.uint8))
    raises_naming(path, load, str(path), (4, 4, 1), "classify")
    np.savez(path, x=np.zeros((5, 3, 8, 8), np.float32), y=np.zeros(5, int))
    assert "transpose" in raises_naming(path, load, str(path), (8, 8, 3), "classify").hint
    np.savez(path, x=np.full((5, 4, 4), 200.0), y=np.zeros(5, int))
    raises_naming(path, load, str(path), (4, 4, 1), "classify")
    path.write_bytes(b"not a zip at all")
    raises_naming(path, load, str(path), (4, 4, 1), "classify")


# --- errors ------------------------------------------------------------------------------


def test_missing_path_and_unknown_source(tmp_path):
    missing = tmp_path / "nowhere"
    error = raises_naming(missing, load, str(missing), (8, 8, 1), "classify")
    assert error.hint and "digits" in error.hint
    error = raises_naming("mnist", load, "mnist", (8, 8, 1), "classify")
    assert "digits" in error.hint and "shapes" in error.hint


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_image_is_named(tmp_path, damage):
    write_shapes(tmp_path, "folder", n=9, size=16, seed=0)
    victim = min((tmp_path / "square").glob("*.png"))
    data = victim.read_bytes()
    victim.write_bytes(b"\x00garbage" * 10 if damage == "garbage" else data[: len(data) // 2])
    error = raises_naming(victim, load, str(tmp_path), (16, 16, 3), "classify")
    assert error.hint


def test_broken_annotation_files_are_named(tmp_path):
    write_shapes(tmp_path / "coco", "coco", n=4, size=16)
    ann = tmp_path / "coco" / "annotations.json"
    ann.write_text("{ not json")
    raises_naming(ann, load, str(tmp_path / "coco"), (16, 16, 3), "detect")
    ann.write_text(json.dumps({"images": [{"id": 1}], "categories": []}))
    raises_naming(ann, load, str(ann), (16, 16, 3), "detect")

    write_shapes(tmp_path / "voc", "voc", n=4, size=16)
    xml = sorted((tmp_path / "voc" / "Annotations").glob("*.xml"))[1]
    xml.write_text("<annotation><object>")
    raises_naming(xml, load, str(tmp_path / "voc"), (16, 16, 3), "detect")


def test_segmentation_problems_are_named(tmp_path):
    write_shapes(tmp_path, "segmentation", n=4, size=16)
    mask = tmp_path / "masks" / "00002.png"
    Image.new("RGB", (16, 16)).save(mask)
    raises_naming(mask, load, str(tmp_path), (16, 16, 3), "segment")
    Image.new("L", (8, 8)).save(mask)
    raises_naming(mask, load, str(tmp_path), (16, 16, 3), "segment")
    mask.unlink()
    raises_naming(tmp_path / "images" / "00002.png", load, str(tmp_path), (16, 16, 3), "segment")


def test_task_and_option_errors():
    with pytest.raises(DataError, match="masks"):
        load("digits", (8, 8, 1), "segment")
    with pytest.raises(DataError, match="boxes"):
        load("digits", (8, 8, 1), "detect")
    with pytest.raises(DataError, match="colour"):
        load("digits", (8, 8, 1), "classify", colour="red")
    with pytest.raises(DataError, match="task"):
        load("digits", (8, 8, 1), "regression")
    with pytest.raises(DataError, match="input_shape"):
        load("digits", (8, 8, 2), "classify")
    with pytest.raises(DataError, match="binary"):
        load("shapes", (8, 8, 1), "detect", n=3, binary=True)


# --- augmentation ------------------------------------------------------------------------


def _shapes_batch(n=24, seed=0):
    data = generate_shapes(n=n, size=(32, 32), seed=seed, empty_fraction=0.1)
    return {
        "x": data.x,
        "y": data.y,
        "masks": data.masks,
        "boxes": data.boxes,
        "present": data.present,
    }


@pytest.mark.parametrize("op, axis", [("flip", 2), ("vflip", 1)])
def test_flips_move_masks_and_boxes_with_pixels(op, axis):
    batch = _shapes_batch()
    out = augment_batch(batch, [op], np.random.default_rng(3))
    flipped = 0
    for i in range(len(batch["x"])):
        was_flipped = np.array_equal(out["x"][i], np.flip(batch["x"][i], axis=axis - 1))
        expected = np.flip(batch["masks"][i], axis=axis - 1) if was_flipped else batch["masks"][i]
        assert was_flipped or np.array_equal(out["x"][i], batch["x"][i])
        assert np.array_equal(out["masks"][i], expected)
        flipped += was_flipped
    assert 0 < flipped < len(batch["x"])
    assert np.allclose(out["boxes"], boxes_from_masks(out["masks"]))
    assert np.array_equal(batch["masks"], _shapes_batch()["masks"])  # input left untouched


def test_crop_keeps_masks_inside_boxes_and_drops_lost_objects():
    batch = _shapes_batch(n=40, seed=1)
    out = augment_batch(batch, ["crop 8"], 0)
    assert out["x"].shape == batch["x"].shape and not np.array_equal(out["x"], batch["x"])
    for mask, box, present in zip(out["masks"], out["boxes"], out["present"]):
        rows, cols = np.nonzero(mask)
        if present == 0:
            assert np.all(box == 0)
            continue
        assert cols.min() >= box[0] * 32 - 1e-4 and cols.max() + 1 <= box[2] * 32 + 1e-4
        assert rows.min() >= box[1] * 32 - 1e-4 and rows.max() + 1 <= box[3] * 32 + 1e-4


def test_augment_is_deterministic_and_train_false_only_normalizes():
    x = _shapes_batch()["x"]
    ops = ["flip", "crop 4", "normalize 0.5 0.25"]
    assert np.array_equal(augment(x, ops, 11), augment(x, ops, 11))
    assert not np.array_equal(augment(x, ops, 11), augment(x, ops, 12))
    assert np.allclose(augment(x, ops, 11, train=False), (x - 0.5) / 0.25, atol=1e-6)


def test_normalize_fits_channel_statistics():
    x = _shapes_batch()["x"] * [1.0, 0.5, 0.2]
    ops = parse_ops(["normalize"], x)
    assert len(ops[0].mean) == 3 and ops[0].mean[2] < ops[0].mean[0]
    out = augment(x.astype(np.float32), ops, 0)
    assert np.allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    assert np.allclose(out.std(axis=(0, 1, 2)), 1, atol=1e-3)
    given = augment(x.astype(np.float32), ["normalize 0.1,0.2,0.3 2,2,2"], 0)
    assert np.allclose(given, (x - [0.1, 0.2, 0.3]) / 2, atol=1e-6)


def test_bad_augmentations_are_data_errors():
    for text in ["spin 90", "rotate 400", "crop", "crop four", "normalize 0.5"]:
        with pytest.raises(DataError):
            parse_ops([text])
    with pytest.raises(DataError, match="channel"):
        augment(np.zeros((2, 4, 4, 1), np.float32), ["normalize 0,0,0 1,1,1"], 0)


# --- resize and channels -----------------------------------------------------------------


def test_channel_conversion_matches_pillow_luma():
    rgb = np.random.default_rng(0).integers(0, 256, size=(12, 9, 3), dtype=np.uint8)
    grey = to_channels(rgb / 255.0, 1)
    pillow = np.asarray(Image.fromarray(rgb).convert("L")) / 255.0
    assert grey.shape == (12, 9, 1) and np.abs(grey[..., 0] - pillow).max() <= PIXEL
    assert np.array_equal(to_channels(grey, 3)[..., 2], grey[..., 0])
    with pytest.raises(DataError):
        to_channels(np.zeros((2, 2, 2)), 3)


def test_resize_is_bilinear_and_masks_stay_labels():
    ramp = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (4, 1))[None, ..., None]
    big = resize(ramp, (8, 16))
    assert big.shape == (1, 8, 16, 1)
    assert np.all(np.diff(big[0, 0, :, 0]) >= 0) and len(np.unique(big.round(5))) > 8
    assert np.allclose(resize(np.full((2, 5, 5, 3), 0.3, np.float32), (9, 3)), 0.3)
    labels = np.random.default_rng(0).integers(0, 4, size=(2, 6, 6))
    assert set(np.unique(resize_masks(labels, (13, 7)))) <= set(np.unique(labels))
    assert np.array_equal(resize_masks(labels, (12, 12))[:, ::2, ::2], labels)


def test_image_folder_mixes_sizes_and_modes(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    Image.new("L", (20, 10), 128).save(tmp_path / "a" / "grey.png")
    Image.new("RGBA", (40, 40), (255, 0, 0, 255)).save(tmp_path / "b" / "red.png")
    Image.new("RGB", (7, 7), (0, 0, 255)).save(tmp_path / "b" / "blue.jpg")
    data = load(str(tmp_path), (16, 16, 3), "classify")
    assert data.x.shape == (3, 16, 16, 3) and data.y.tolist() == [0, 1, 1]
    assert np.allclose(data.x[0], 128 / 255, atol=1e-6)
    assert data.x[1, ..., 2].mean() > 0.9 and data.x[2, ..., 0].mean() > 0.9
    grey = load(str(tmp_path), (16, 16, 1), "classify")
    assert grey.x[2, 0, 0, 0] == pytest.approx(0.299, abs=0.01)


# --- dataset and batches -----------------------------------------------------------------


def test_split_is_stratified_disjoint_and_deterministic():
    data = load("shapes", (8, 8, 1), "detect", n=200, empty_fraction=0.1)
    train, val = data.split(0.2, seed=1)
    _, val2 = data.split(0.2, seed=1)
    assert np.array_equal(val.x, val2.x) and len(train) + len(val) == 200
    assert len(val) == 40
    for label in range(3):
        whole = ((data.y == label) & (data.present > 0)).sum()
        assert ((val.y == label) & (val.present > 0)).sum() == round(0.2 * whole)
    assert (val.present == 0).sum() == 4
    _, other = data.split(0.2, seed=2)
    assert not np.array_equal(val.x, other.x)
    with pytest.raises(DataError):
        data.split(1.0)


def test_dataset_rejects_inconsistent_arrays():
    with pytest.raises(DataError, match="y"):
        Dataset(x=np.zeros((3, 4, 4, 1)), y=np.zeros(2), classes=["a"])
    with pytest.raises(DataError, match="labels"):
        Dataset(x=np.zeros((2, 4, 4, 1)), y=[0, 3], classes=["a", "b"])
    subset = Dataset(x=np.zeros((3, 4, 4, 1)), y=[0, 1, 0], classes=["a", "b"]).subset([2, 1])
    assert subset.y.tolist() == [0, 1] and len(subset) == 2


def test_batches_are_deterministic_and_cover_every_row():
    data = load("shapes", (8, 8, 3), "segment", n=50)
    first = list(batches(data, 16, shuffle=True, seed=3, epoch=0))
    again = list(batches(data, 16, shuffle=True, seed=3, epoch=0))
    later = list(batches(data, 16, shuffle=True, seed=3, epoch=1))
    order = np.concatenate([b["index"] for b in first])
    assert sorted(order.tolist()) == list(range(50))
    assert np.array_equal(order, np.concatenate([b["index"] for b in again]))
    assert not np.array_equal(order, np.concatenate([b["index"] for b in later]))
    assert [len(b["x"]) for b in first] == [16, 16, 16, 2]
    assert set(first[0]) == {"x", "y", "present", "boxes", "masks", "index"}
    assert np.array_equal(first[0]["masks"], data.masks[first[0]["index"]])
    assert len(list(batches(data, 16, drop_last=True))) == 3
    plain = next(iter(batches(data, 50, shuffle=False)))
    assert np.array_equal(plain["index"], np.arange(50))
    augmented = list(batches(data, 16, seed=3, ops=["flip"]))
    assert np.array_equal(np.concatenate([b["index"] for b in augmented]), order)
