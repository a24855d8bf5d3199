"""The object readers keep every object of real files the generator wrote, and refuse bad
input with an error that names the file and the annotation (or skip it, counted)."""

import json
import shutil
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

from cnnspec.data import DataError
from cnnspec.data.coco_objects import index_coco
from cnnspec.data.shapes_multi import generate_multi_shapes, write_multi_shapes
from cnnspec.data.voc_objects import index_voc
from cnnspec.data.yolo_objects import index_yolo

N = 24


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    # 0 to 5 objects: negatives and crowded images both occur.
    return write_multi_shapes(tmp_path_factory.mktemp("multi"), n=N, seed=5, objects=(0, 5))


@pytest.fixture
def copy(written, tmp_path) -> Path:
    """A private copy of the written set that a test may damage."""
    return Path(shutil.copytree(written, tmp_path / "set"))


def counts_in_files(root: Path) -> dict[str, list[int]]:
    """Objects per image as each file states them, read without the readers."""
    doc = json.loads((root / "annotations.json").read_text())
    per_image = Counter(a["image_id"] for a in doc["annotations"])
    stems = [Path(i["file_name"]).stem for i in doc["images"]]
    return {
        "coco": [per_image[i["id"]] for i in doc["images"]],
        "yolo": [len((root / "labels" / f"{s}.txt").read_text().split("\n")) - 1 for s in stems],
        "voc": [
            len(ElementTree.parse(root / "Annotations" / f"{s}.xml").findall("object"))
            for s in stems
        ],
    }


READERS = {"coco": index_coco, "yolo": index_yolo, "voc": index_voc}


@pytest.mark.parametrize("fmt", READERS)
def test_readers_keep_every_object(written, fmt):
    index = READERS[fmt](written)
    expected = counts_in_files(written)[fmt]
    assert [len(image.boxes) for image in index.images] == expected
    assert 0 in expected and max(expected) >= 4  # the set has negatives and crowded images
    assert index.classes == ["circle", "square", "triangle"]
    assert index.skipped == []


@pytest.mark.parametrize("fmt", READERS)
def test_readers_give_the_generated_boxes_and_classes(written, fmt):
    _, truths = generate_multi_shapes(N, (96, 96), seed=5, objects=(0, 5))
    index = READERS[fmt](written)
    for image, truth in zip(index.images, truths):
        assert (image.width, image.height) == (96, 96)
        np.testing.assert_array_equal(image.classes, truth.classes)
        # YOLO stores normalised centres with six decimals.
        np.testing.assert_allclose(image.boxes, truth.boxes, atol=1e-3 if fmt == "yolo" else 0)


def test_negatives_and_describe(written):
    index = index_coco(written)
    negatives = sum(1 for image in index.images if len(image.boxes) == 0)
    assert negatives > 0
    assert f"({negatives} without objects)" in index.describe()


def test_coco_crowd_is_kept_flagged_and_not_a_target(copy):
    doc = json.loads((copy / "annotations.json").read_text())
    doc["annotations"][0]["iscrowd"] = 1
    (copy / "annotations.json").write_text(json.dumps(doc))
    index = index_coco(copy)
    image = next(i for i in index.images if len(i.boxes))
    assert image.iscrowd.tolist()[0] and not image.targets[0] and image.truth().iscrowd[0]
    assert sum(len(i.boxes) for i in index.images) == len(doc["annotations"])


def test_voc_difficult_is_kept_flagged(copy):
    xml = next(
        p for p in sorted((copy / "Annotations").glob("*.xml")) if "<object>" in p.read_text()
    )
    xml.write_text(
        xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1)
    )
    image = next(i for i in index_voc(copy).images if i.path.stem == xml.stem)
    assert image.difficult.tolist()[0] and not image.targets[0] and image.truth().iscrowd[0]


def _edit_coco(root: Path, change) -> None:
    doc = json.loads((root / "annotations.json").read_text())
    change(doc)
    (root / "annotations.json").write_text(json.dumps(doc))


def _first(doc, key="annotations"):
    return doc[key][0]


# (what is wrong, how to make it so, what the error must say)
COCO_ERRORS = [
    (
        "unknown category",
        lambda d: _first(d).update(category_id=99),
        ["annotations.json", "annotation 1", "category_id 99"],
    ),
    (
        "box outside",
        lambda d: _first(d).update(bbox=[90, 10, 30, 5]),
        ["annotations.json", "annotation 1", "beyond the image width 96"],
    ),
    ("zero width", lambda d: _first(d).update(bbox=[10, 10, 0, 5]), ["annotation 1", "width is 0"]),
    (
        "negative height",
        lambda d: _first(d).update(bbox=[10, 10, 5, -3]),
        ["annotation 1", "height is negative"],
    ),
    (
        "bbox not four numbers",
        lambda d: _first(d).update(bbox=[1, 2, 3]),
        ["annotation 1", "not four numbers"],
    ),
    (
        "unknown image",
        lambda d: _first(d).update(image_id=12345),
        ["annotation 1", "image_id 12345"],
    ),
    (
        "missing image file",
        lambda d: _first(d, "images").update(file_name="gone.png"),
        ["annotations.json", "gone.png", "was not found"],
    ),
]


@pytest.mark.parametrize("case, change, words", COCO_ERRORS, ids=[c[0] for c in COCO_ERRORS])
def test_coco_bad_input_is_a_located_error(copy, case, change, words):
    _edit_coco(copy, change)
    with pytest.raises(DataError) as caught:
        index_coco(copy)
    for word in words:
        assert word in caught.value.message
    assert caught.value.hint


@pytest.mark.parametrize("case", ["box outside", "zero width", "missing image file"])
def test_coco_skip_rule_counts_what_it_leaves_out(copy, case):
    change = next(c[1] for c in COCO_ERRORS if c[0] == case)
    _edit_coco(copy, change)
    index = index_coco(copy, invalid="skip")
    assert len(index.skipped) == 1 and "annotations.json" in index.skipped[0]
    assert "1 annotations skipped" in index.describe()


def test_coco_box_within_tolerance_is_clipped(copy):
    _edit_coco(copy, lambda d: _first(d).update(bbox=[-0.5, 0, 10, 10]))
    assert index_coco(copy).images[0].boxes.min() >= 0


def _first_label(root: Path) -> Path:
    return next(p for p in sorted((root / "labels").glob("*.txt")) if p.read_text())


YOLO_ERRORS = [
    ("class out of range", "7 0.5 0.5 0.1 0.1", ["line 1", "class 7", "3 classes"]),
    ("box outside", "0 0.95 0.5 0.3 0.1", ["line 1", "beyond the image width 96"]),
    ("zero size", "0 0.5 0.5 0 0.1", ["line 1", "width is 0"]),
    ("negative size", "0 0.5 0.5 0.1 -0.1", ["line 1", "height is negative"]),
    ("segment polygon", "0 0.1 0.1 0.2 0.1 0.2 0.2", ["line 1", "7 values"]),
    ("not numbers", "circle 0.5 0.5 0.1 0.1", ["line 1", "integer class"]),
]


@pytest.mark.parametrize("case, line, words", YOLO_ERRORS, ids=[c[0] for c in YOLO_ERRORS])
def test_yolo_bad_input_is_a_located_error(copy, case, line, words):
    label = _first_label(copy)
    label.write_text(line + "\n")
    with pytest.raises(DataError) as caught:
        index_yolo(copy)
    assert str(label) in caught.value.message
    for word in words:
        assert word in caught.value.message


def test_yolo_missing_image_and_missing_labels(copy):
    label = _first_label(copy)
    (copy / "images" / f"{label.stem}.png").unlink()
    with pytest.raises(DataError, match="its image was not found"):
        index_yolo(copy)
    index = index_yolo(copy, invalid="skip")
    assert len(index.images) == N - 1 and len(index.skipped) == 1
    # An image without a label file is a negative, as Ultralytics reads it.
    label.unlink()
    other = next(p for p in sorted((copy / "labels").glob("*.txt")) if p.read_text())
    other.unlink()
    image = next(i for i in index_yolo(copy, invalid="skip").images if i.path.stem == other.stem)
    assert len(image.boxes) == 0


def test_yolo_needs_class_names(copy):
    (copy / "classes.txt").unlink()
    with pytest.raises(DataError, match="no class names"):
        index_yolo(copy)
    assert index_yolo(copy, classes=["a", "b", "c"]).classes == ["a", "b", "c"]


def _first_voc(root: Path) -> Path:
    return next(
        p for p in sorted((root / "Annotations").glob("*.xml")) if "<object>" in p.read_text()
    )


def _set(tag: str, text: str):
    """An edit of a VOC document: the first <tag> under the first <object> (or the
    document, for filename) gets `text`."""

    def change(root):
        holder = root if tag == "filename" else root.find("object")
        next(holder.iter(tag)).text = text

    return change


VOC_ERRORS = [
    ("unknown class", _set("name", "hexagon"), ["object 1", "'hexagon'"]),
    ("box outside", _set("xmax", "200"), ["object 1", "beyond the image width 96"]),
    ("negative width", _set("xmax", "0"), ["object 1", "width is negative"]),
    ("not a number", _set("ymin", "y"), ["object 1", "no numeric <bndbox>"]),
    ("missing image file", _set("filename", "gone.png"), ["gone.png", "was not found"]),
]


@pytest.mark.parametrize("case, change, words", VOC_ERRORS, ids=[c[0] for c in VOC_ERRORS])
def test_voc_bad_input_is_a_located_error(copy, case, change, words):
    xml = next(
        p for p in sorted((copy / "Annotations").glob("*.xml")) if "<object>" in p.read_text()
    )
    tree = ElementTree.parse(xml)
    change(tree.getroot())
    tree.write(xml)
    with pytest.raises(DataError) as caught:
        index_voc(copy)
    assert str(xml) in caught.value.message
    for word in words:
        assert word in caught.value.message


def test_unknown_policy_is_refused(written):
    with pytest.raises(DataError, match="unknown rule"):
        index_coco(written, invalid="ignore")


def test_generator_is_seeded_and_honours_its_ranges():
    first, truths = generate_multi_shapes(40, (96, 96), seed=9, objects=(1, 5))
    again, _ = generate_multi_shapes(40, (96, 96), seed=9, objects=(1, 5))
    other, _ = generate_multi_shapes(40, (96, 96), seed=10, objects=(1, 5))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    counts = [len(t.boxes) for t in truths]
    assert min(counts) >= 1 and max(counts) <= 5 and len(set(counts)) > 2
    assert {int(k) for t in truths for k in t.classes} == {0, 1, 2}
    sides = np.concatenate([t.boxes[:, 2] - t.boxes[:, 0] for t in truths])
    assert sides.min() < 16 and sides.max() > 32  # small and medium objects both occur


def test_writer_refuses_a_used_folder_and_leaves_nothing_half_written(tmp_path):
    write_multi_shapes(tmp_path / "set", n=2)
    with pytest.raises(DataError, match="not an empty folder"):
        write_multi_shapes(tmp_path / "set", n=2)
    # The set was built in a hidden folder beside it, renamed into place, nothing left over.
    assert [p.name for p in tmp_path.iterdir()] == ["set"]
