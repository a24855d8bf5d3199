"""Augmentation and resizing that move every object of detection data with the pixels:
letterbox (`resize letterbox` in the compile section), mosaic (`augment mosaic P`) and
affine's scale range. Boxes are checked against the pixels they were drawn around; predict
and evaluate map boxes back to each image's own pixels; the batches are the same for any
number of workers and for both backends' loaders."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import cnnspec
from cnnspec.data import DataError, index
from cnnspec.data.augmentation import MIN_SIDE, augment_batch, parse_ops
from cnnspec.detection.objects import Detections
from cnnspec.train import make_plan

ROOT = Path(__file__).resolve().parents[1]
INPUT = (48, 48, 3)
# a 4:3 and a 1:2 picture, objects in their own pixels (x0, y0, x1, y1) with a colour each
PICTURES = {
    "wide.png": ((80, 60), [((8, 6, 30, 26), (255, 0, 0)), ((50, 30, 74, 56), (0, 255, 0))]),
    "tall.png": ((30, 60), [((4, 10, 26, 40), (0, 0, 255))]),
}


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """A COCO folder of non-square images holding filled boxes on black."""
    from PIL import Image, ImageDraw

    root = tmp_path_factory.mktemp("letterbox")
    (root / "images").mkdir()
    doc = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for image_id, (name, (size, objects)) in enumerate(PICTURES.items(), 1):
        picture = Image.new("RGB", size)
        pen = ImageDraw.Draw(picture)
        for box, colour in objects:
            pen.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=colour)
            x0, y0, x1, y1 = box
            doc["annotations"].append(
                {
                    "id": len(doc["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": 0,
                }
            )
        picture.save(root / "images" / name)
        doc["images"].append(
            {"id": image_id, "file_name": name, "width": size[0], "height": size[1]}
        )
    (root / "annotations.json").write_text(json.dumps(doc))
    return root


def _letterboxed(coco):
    samples = index(coco, INPUT, "objects", resize="letterbox")
    return samples, samples.batch(np.arange(len(samples)))


def _annotations(row: int) -> np.ndarray:
    return np.array([box for box, _ in list(PICTURES.values())[row][1]], np.float32)


# --- letterbox -----------------------------------------------------------------------------
def test_letterbox_keeps_the_aspect_ratio_and_moves_the_boxes_with_the_pixels(coco):
    _, batch = _letterboxed(coco)
    for row, (_, (size, objects)) in enumerate(PICTURES.items()):
        x = batch["x"][row]
        grey = np.all(np.abs(x - 114 / 255) < 1e-6, axis=-1)
        # one scale for both axes: the picture's share of the input has its aspect ratio
        rows, cols = np.flatnonzero(~grey.all(1)), np.flatnonzero(~grey.all(0))
        content = (cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1)
        assert content[0] / content[1] == pytest.approx(size[0] / size[1], rel=0.05)
        assert grey.any()
        kept = batch["object_classes"][row] >= 0
        boxes = batch["object_boxes"][row][kept] * 48
        for box, (_, colour) in zip(boxes, objects):
            channel = int(np.argmax(colour))
            lit = x[..., channel] > 0.5
            ys, xs = np.nonzero(lit)
            found = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            np.testing.assert_allclose(found, box, atol=1.0)


def test_letterbox_ground_truth_round_trips_to_the_image_pixels(coco):
    from cnnspec.data.object_samples import truths_of

    _, batch = _letterboxed(coco)
    for row, truth in enumerate(truths_of(batch, INPUT[:2])):
        np.testing.assert_allclose(truth.boxes, _annotations(row), atol=1e-3)


def _plan():
    from cnnspec.detection.priors import Geometry, HeadInfo
    from cnnspec.train.plan import Head

    info = HeadInfo("out", 1, Geometry((8,), ((6, 6),), offset=0.5), extra="objectness")
    return SimpleNamespace(
        heads=[Head("out", "dense", (6, 6, 6), None, info=info)],
        metrics=["map", "map_50"],
        dense=True,
        task="detect",
        class_names=["thing"],
    )


def _perfect(batch):
    """Detections equal to each image's letterboxed ground truth, in input pixels."""

    def detect(head, raw, **kw):
        found = []
        for boxes, classes in zip(batch["object_boxes"], batch["object_classes"]):
            real = classes >= 0
            found.append(
                Detections(boxes[real] * 48, np.ones(real.sum(), np.float32), classes[real])
            )
        return found

    return detect


def test_letterbox_predict_reports_boxes_in_the_image_pixels(coco, tmp_path, monkeypatch):
    from cnnspec.train import detections

    _, batch = _letterboxed(coco)
    paths = [str(coco / "images" / name) for name in PICTURES]
    x, frames = detections.read_object_images(paths, INPUT, "letterbox")
    np.testing.assert_array_equal(x, batch["x"])  # predict sees what training saw
    monkeypatch.setattr(detections, "detect", _perfect(batch))
    backend = SimpleNamespace(name="torch", predict=lambda x: [np.zeros((len(x), 36, 6))])
    drawn = [tmp_path / f"{i}.png" for i in range(len(paths))]
    results = detections.predict_objects(_plan(), backend, x, paths, drawn, frames=frames)
    for row, result in enumerate(results):
        boxes = sorted(d["box"] for d in result["detections"])
        np.testing.assert_allclose(boxes, sorted(_annotations(row).tolist()), atol=0.011)
        assert Path(result["drawn"]).is_file()


def test_letterbox_evaluation_scores_in_the_image_pixels(coco, monkeypatch):
    from cnnspec.detection import reading
    from cnnspec.train.metrics import Meter

    _, batch = _letterboxed(coco)
    monkeypatch.setattr(reading, "detect", _perfect(batch))
    meter = Meter(_plan())
    meter.update([np.zeros((2, 36, 6), np.float32)], batch)
    assert meter.result()["map"] == pytest.approx(1.0)
    for row, (truth, found) in enumerate(zip(meter.truths, meter.detections)):
        np.testing.assert_allclose(truth.boxes, _annotations(row), atol=1e-3)
        np.testing.assert_allclose(found.boxes, _annotations(row), atol=1e-3)


def test_stretch_stays_the_default_and_is_unchanged(coco):
    stretched = index(coco, INPUT, "objects")
    batch = stretched.batch(np.arange(2))
    size = np.array([80, 60, 80, 60], np.float32)
    np.testing.assert_allclose(batch["object_boxes"][0][:2], _annotations(0) / size, atol=1e-6)
    assert not np.any(np.all(np.abs(batch["x"] - 114 / 255) < 1e-6, axis=-1))


# --- mosaic --------------------------------------------------------------------------------
def _painted(n: int = 8, size: int = 64):
    """n images, black, each with one filled box whose class is its row and whose red
    level says the class: which pixels belong to which object is read off the pixels."""
    rng = np.random.default_rng(5)
    x = np.zeros((n, size, size, 3), np.float32)
    boxes = np.zeros((n, 1, 4), np.float32)
    for i in range(n):
        x0, y0 = rng.integers(4, size - 28, 2)
        w, h = rng.integers(12, 24, 2)
        x[i, y0 : y0 + h, x0 : x0 + w, 0] = (i + 1) / (n + 1)
        boxes[i, 0] = np.array([x0, y0, x0 + w, y0 + h]) / size
    return {
        "x": x,
        "y": np.arange(n),
        "present": np.ones(n, np.float32),
        "object_boxes": boxes,
        "object_classes": np.arange(n)[:, None],
        "object_crowd": np.zeros((n, 1), bool),
        "object_dropped": np.zeros(n, np.int64),
    }


def test_mosaic_boxes_cover_the_moved_pixels_and_drops_are_counted():
    batch = _painted()
    n, size = len(batch["x"]), batch["x"].shape[1]
    out = augment_batch(batch, ["mosaic 1.0"], np.random.default_rng(0))
    assert out["object_boxes"].shape == (n, 4, 4)  # four images' objects per image
    kept = out["object_classes"] >= 0
    # every image became a mosaic of four one-object images
    assert (kept.sum(1) + out["object_dropped"] == 4).all()
    assert out["object_dropped"].sum() > 0 and kept.sum() > 0
    for i in range(n):
        x = out["x"][i, ..., 0]
        covered = np.zeros(x.shape, bool)
        for box, cls in zip(out["object_boxes"][i][kept[i]], out["object_classes"][i][kept[i]]):
            x0, y0, x1, y1 = np.round(box * size).astype(int)
            assert x1 - x0 >= MIN_SIDE and y1 - y0 >= MIN_SIDE
            own = np.abs(x - (cls + 1) / (n + 1)) < 0.02  # its object's pixels
            # the box holds them (a one-pixel edge is blended by the half-size resize) ...
            assert own[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].mean() > 0.95
            # ... and no more: the ring of pixels around it holds none of its object
            ring = np.zeros(x.shape, bool)
            ring[max(y0 - 2, 0) : y1 + 2, max(x0 - 2, 0) : x1 + 2] = True
            ring[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = False
            assert own[ring].mean() < 0.05
            covered[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = True
        painted = (x > 0.05) & (np.abs(x - 114 / 255) > 0.02) & (out["x"][i, ..., 1] < 0.05)
        # what no kept box covers is the little left of the objects that were dropped
        assert (painted & ~covered).sum() <= 16 * out["object_dropped"][i]


def test_mosaic_probability_and_evaluation():
    batch = _painted()
    never = augment_batch(batch, ["mosaic 0"], np.random.default_rng(0))
    np.testing.assert_array_equal(never["x"], batch["x"])
    assert never["object_boxes"].shape[1] == 4  # one shape per run
    np.testing.assert_array_equal(never["object_boxes"][:, 0], batch["object_boxes"][:, 0])
    held_out = augment_batch(batch, ["mosaic 1"], np.random.default_rng(0), train=False)
    np.testing.assert_array_equal(held_out["x"], batch["x"])


def test_mosaic_is_refused_where_it_cannot_work():
    with pytest.raises(DataError, match="before normalize"):
        parse_ops(["normalize", "mosaic 0.5"])
    with pytest.raises(DataError, match="outside"):
        parse_ops(["mosaic 1.5"])
    plain = {"x": np.zeros((2, 8, 8, 3), np.float32), "y": np.zeros(2, np.int64)}
    with pytest.raises(DataError, match="no object lists"):
        augment_batch(plain, ["mosaic 1"], np.random.default_rng(0))


CLASSIFIER = """model tiny
input 16x16x3
conv 4 3x3 same relu
gap
dense 3 softmax
compile {{
  optimizer adam
  {line}
}}
"""


@pytest.mark.parametrize(
    "line, word", [("augment flip mosaic 0.5", "mosaic"), ("resize letterbox", "letterbox")]
)
def test_mosaic_and_letterbox_on_a_classifier_are_located_errors(tmp_path, line, word):
    path = tmp_path / "net.cnn"
    path.write_text(CLASSIFIER.format(line=line))
    with pytest.raises(cnnspec.SpecErrors) as info:
        make_plan(cnnspec.compile_file(path))
    [error] = [e for e in info.value.errors if e.code == "E525"]
    assert error.span.line == 8 and word in error.message


def test_an_unknown_resize_is_a_located_error(tmp_path):
    path = tmp_path / "net.cnn"
    path.write_text(CLASSIFIER.format(line="resize squash"))
    with pytest.raises(cnnspec.SpecErrors) as info:
        cnnspec.compile_file(path)
    [error] = info.value.errors
    assert error.code == "E503" and error.span.line == 8 and "squash" in error.message


# --- affine's scale range ------------------------------------------------------------------
def test_affine_scale_is_optional_and_moves_the_boxes():
    from torchvision.transforms import v2

    from cnnspec.data.augmentation import _transform

    old, new = parse_ops(["affine 10 0.1", "affine 10 0.1 0.5"])
    assert _transform(old, v2, 3).scale is None  # existing strings keep their meaning
    assert _transform(new, v2, 3).scale == (0.5, 1.5)
    batch = _painted()
    out = augment_batch(batch, ["affine 0 0 0.5"], np.random.default_rng(3))
    for i in range(len(batch["x"])):
        lit = out["x"][i, ..., 0] > 0.5 * (i + 1) / 9
        if out["object_classes"][i, 0] < 0 or not lit.any():
            continue
        ys, xs = np.nonzero(lit)
        found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        np.testing.assert_allclose(found, out["object_boxes"][i, 0] * 64, atol=1.5)


# --- the same batches for any number of workers, and for both backends' loaders -----------
def test_mosaic_and_letterbox_batches_do_not_depend_on_workers(coco):
    from cnnspec.data.torch_loader import set_epoch, torch_loader

    samples = index(coco, INPUT, "objects", resize="letterbox")
    samples = samples.subset(np.tile(np.arange(2), 4))  # 8 rows of the two files
    ops = parse_ops(["mosaic 0.7", "affine 5 0.1 0.3", "flip"])
    made = []
    for workers in (0, 2):
        loader = torch_loader(samples, 4, train=True, seed=1, ops=ops, workers=workers)
        set_epoch(loader, 1)
        made.append([{k: np.asarray(v) for k, v in b.items()} for b in loader])
    for a, b in zip(*made):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # torch's DistributedSampler and the Keras loader shuffle differently; what both
    # promise is that a batch depends only on (seed, epoch, its rows): each equals the
    # shared `prepare` of its rows, whichever loader and thread made it
    from cnnspec.data.loading import keras_batches, prepare

    for workers in (0, 2):
        keras = list(
            keras_batches(samples, 4, train=True, seed=1, epoch=1, ops=ops, workers=workers)
        )
        assert len(keras) == 2
        for batch in [*keras, *made[0]]:
            again = prepare(samples, np.asarray(batch["index"]), ops, 1, 1, True)
            for key in again:
                np.testing.assert_array_equal(batch[key], again[key], err_msg=key)


# --- a short training run ------------------------------------------------------------------
def test_yolo_shapes_trains_with_mosaic(tmp_path, capsys):
    import csv

    from cnnspec.cli import main

    text = (ROOT / "specs" / "yolo_shapes.cnn").read_text()
    assert "augment flip" in text
    spec = tmp_path / "yolo_mosaic.cnn"
    spec.write_text(text.replace("augment flip", "augment mosaic 1.0 flip"))
    out = tmp_path / "run"
    args = ["train", spec, "--data", "shapes_multi", "--data-option", "n=24", "--epochs", "1"]
    code = main([str(a) for a in [*args, "--batch-size", "8", "--out", out]])
    assert code == 0, capsys.readouterr().err[-3000:]
    with open(out / "history.csv", newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert float(row["train_objects_dropped"]) > 0  # mosaic's drops reach the log


DETECTOR = """model tiny_det
input 32x32x3
conv 8 3x3 stride=2 same relu
f = conv 16 3x3 stride=2 same relu
detect f classes=1 strides=4 objectness offset=0.5 tower=0
compile {
  optimizer adam lr=0.01
  augment mosaic 0.5 flip
  resize letterbox
  epochs 1; batch_size 2; validation_split 0; seed 0
}
"""


def test_letterbox_reaches_train_evaluate_and_predict_from_the_spec(coco, tmp_path, capsys):
    from PIL import Image

    from cnnspec.cli import main
    from cnnspec.data.object_samples import LetterboxImages
    from cnnspec.train.session import index_data

    spec = tmp_path / "det.cnn"
    spec.write_text(DETECTOR)
    _, samples = index_data(cnnspec.compile_file(spec), coco)
    assert isinstance(samples.reader, LetterboxImages)

    def run(*args):
        capsys.readouterr()
        assert main([str(a) for a in args]) == 0, capsys.readouterr().err[-3000:]
        return capsys.readouterr().out

    run("train", spec, "--data", coco, "--out", tmp_path / "run", "--workers", "0")
    weights = tmp_path / "run" / "best.safetensors"
    scored = json.loads(
        run(
            "evaluate",
            spec,
            "--weights",
            weights,
            "--data",
            coco,
            "--split",
            "all",
            "--format",
            "json",
        )
    )
    assert scored["counts"]["objects"] == 3
    paths = [coco / "images" / name for name in PICTURES]
    found = json.loads(
        run(
            "predict",
            spec,
            *paths,
            "--weights",
            weights,
            "--out",
            tmp_path / "drawn",
            "--score-threshold",
            "0",
            "--format",
            "json",
        )
    )
    for item, (size, _) in zip(found, PICTURES.values()):
        assert item["detections"]
        boxes = np.array([d["box"] for d in item["detections"]])
        assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= size[0]).all()
        assert (boxes[:, [1, 3]] <= size[1]).all()
        with Image.open(item["drawn"]) as drawn:
            assert drawn.size == size  # drawn on the image itself, in its own pixels


def test_resize_as_a_data_option_is_refused(coco, tmp_path):
    from cnnspec.train.session import index_data

    spec = tmp_path / "det.cnn"
    spec.write_text(DETECTOR)
    with pytest.raises(DataError, match="not a data option") as caught:
        index_data(cnnspec.compile_file(spec), coco, options={"resize": "letterbox"})
    assert "compile section" in caught.value.hint
