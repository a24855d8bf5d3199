"""Every object of each image through the streaming pipeline: the readers' objects padded
into batches, augmentation that moves them (and counts those it drops), targets per batch,
and bad annotations refused with the file named."""

import json

import numpy as np
import pytest

from cnnspec.data import DataError, index
from cnnspec.data.augmentation import augment_batch
from cnnspec.data.shapes_multi import generate_multi_shapes, write_multi_shapes


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_multi_shapes(tmp_path_factory.mktemp("multi") / "set", n=12, size=48, seed=4)


@pytest.mark.parametrize("form", ["coco", "yolo", "voc"])
def test_every_object_of_every_file_reaches_the_batch(written, form):
    # the folder holds all three forms; format= says which to read
    samples = index(written, (48, 48, 3), "objects", format=form)
    _, truths = generate_multi_shapes(12, (48, 48), seed=4)
    batch = samples.batch(np.arange(len(samples)))
    counts = (batch["object_classes"] >= 0).sum(1)
    assert counts.tolist() == [len(t.classes) for t in truths]
    for row, truth in zip(range(12), truths):
        kept = batch["object_classes"][row] >= 0
        np.testing.assert_allclose(batch["object_boxes"][row][kept] * 48, truth.boxes, atol=1.01)
        assert sorted(batch["object_classes"][row][kept]) == sorted(truth.classes)


def test_flip_moves_each_box_with_its_pixels():
    samples = index("shapes_multi", (48, 48, 3), "objects", n=6, objects="1-1")
    batch = samples.batch(np.arange(6))
    flipped = augment_batch(batch, ["flip"], np.random.default_rng(1))
    moved = np.flatnonzero(np.abs(flipped["x"] - batch["x"]).max((1, 2, 3)) > 0)
    assert len(moved)
    for i in moved:
        x0, y0, x1, y1 = batch["object_boxes"][i, 0]
        assert flipped["object_boxes"][i, 0] == pytest.approx([1 - x1, y0, 1 - x0, y1])
        np.testing.assert_array_equal(flipped["x"][i], batch["x"][i][:, ::-1])


def test_objects_moved_out_of_the_picture_are_dropped_and_counted():
    samples = index("shapes_multi", (48, 48, 3), "objects", n=32)
    batch = samples.batch(np.arange(32))
    before = (batch["object_classes"] >= 0).sum()
    for ops in (["crop 20"], ["affine 0 0.45"]):
        out = augment_batch(batch, ops, np.random.default_rng(2))
        after = (out["object_classes"] >= 0).sum()
        assert out["object_dropped"].sum() == before - after > 0
        kept = out["object_classes"] >= 0
        boxes = out["object_boxes"][kept]
        assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
        assert boxes.min() >= 0 and boxes.max() <= 1


def test_targets_ride_with_the_batch(monkeypatch):
    from cnnspec.detection.priors import Geometry, HeadInfo
    from cnnspec.train.dense import targets_of, with_targets
    from cnnspec.train.plan import Head

    info = HeadInfo("out", 3, Geometry((8,), ((6, 6),), offset=0.5), extra="objectness")
    plan = type(
        "Plan", (), {"dense": True, "heads": [Head("out", "dense", (6, 6, 8), None, info=info)]}
    )
    samples = index("shapes_multi", (48, 48, 3), "objects", n=4)
    batch = with_targets(plan, samples.batch(np.arange(4)))
    targets = targets_of(plan.heads[0], batch)
    assert targets["matched"].shape == (4, 36) and (targets["matched"] >= 0).any()
    assert set(np.unique(targets["classes"])) <= {-1, 0, 1, 2}


def _coco(tmp_path, annotation):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "images" / "a.png")
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "annotations": [{"id": 7, "image_id": 1, "iscrowd": 0, **annotation}],
        "categories": [{"id": 3, "name": "ring"}],
    }
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    "annotation, says",
    [
        ({"category_id": 3, "bbox": [30, 5, 25, 10]}, "beyond the image width"),
        ({"category_id": 3, "bbox": [5, 5, 0, 10]}, "width is 0"),
        ({"category_id": 9, "bbox": [5, 5, 10, 10]}, "9"),
    ],
)
def test_bad_annotations_name_the_file_and_the_annotation(tmp_path, annotation, says):
    path = _coco(tmp_path, annotation)
    with pytest.raises(DataError) as caught:
        index(path, (32, 32, 3), "objects")
    assert str(path) in caught.value.message and says in caught.value.message


def test_skipped_annotations_are_counted_for_the_log(tmp_path):
    path = _coco(tmp_path, {"category_id": 3, "bbox": [30, 5, 25, 10]})
    samples = index(path, (32, 32, 3), "objects", invalid="skip")
    assert any("1 annotations skipped" in note for note in samples.notes)
    assert any("annotation 7" in note for note in samples.notes)
