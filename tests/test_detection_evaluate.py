"""The evaluator gives COCO's numbers: hand-checked cases, and pycocotools run the usual way
(JSON files on disk) on a generated set."""

import contextlib
import io
import json

import numpy as np
import pytest

from cnnspec.data.coco_objects import index_coco
from cnnspec.data.shapes_multi import write_multi_shapes
from cnnspec.detection.evaluate import STATS, evaluate
from cnnspec.detection.objects import make_detections, make_truth

SQUARE = [0, 0, 10, 10]  # area 100: a "small" object in COCO's size ranges


def one_image(
    detected_boxes,
    scores,
    classes=None,
    truth_boxes=(SQUARE,),
    truth_classes=(0,),
    iscrowd=None,
    names=("a",),
):
    classes = [0] * len(scores) if classes is None else classes
    truths = [make_truth(truth_boxes, truth_classes, iscrowd)]
    return evaluate(truths, [make_detections(detected_boxes, scores, classes)], list(names))


def test_perfect_predictions_score_one():
    result = one_image([SQUARE], [0.9])
    for key in ("map", "map_50", "map_75", "map_small", "ar_100"):
        assert result[key] == pytest.approx(1.0)
    assert result["map_medium"] is None and result["map_large"] is None  # no such objects
    assert result["per_class"] == {"a": {"ap": pytest.approx(1.0), "ap_50": pytest.approx(1.0)}}
    assert result["counts"] == {"images": 1, "objects": 1, "ignored": 0, "detections": 1}


def test_a_shifted_box_counts_at_05_not_at_075():
    # Shifted 2 px: IoU = 80 / 120 = 2/3, a hit at the thresholds .50 .55 .60 .65 and a
    # miss at .70 ... .95, so AP over the ten thresholds is 4/10. (2/3 is chosen away from
    # every threshold, where float rounding would decide.)
    result = one_image([[2, 0, 12, 10]], [0.9])
    assert result["map_50"] == pytest.approx(1.0)
    assert result["map_75"] == pytest.approx(0.0)
    assert result["map"] == pytest.approx(0.4)


def test_a_higher_scored_false_positive_lowers_ap():
    # Ranked: the false positive (precision 0 at recall 0), then the hit (precision 1/2 at
    # recall 1). COCO interpolates precision as the best at any higher recall: 1/2 at
    # every recall point, so AP = 0.5 at every threshold.
    result = one_image([SQUARE, [50, 50, 60, 60]], [0.8, 0.9])
    assert result["map"] == pytest.approx(0.5) and result["map_50"] == pytest.approx(0.5)
    # Scored below the hit, it costs nothing: the ranking reaches recall 1 at precision 1.
    assert one_image([SQUARE, [50, 50, 60, 60]], [0.9, 0.8])["map"] == pytest.approx(1.0)


def test_a_detection_on_a_crowd_region_is_ignored():
    crowd = [[40, 40, 80, 80]]
    result = one_image(
        [SQUARE, [45, 45, 75, 75]],
        [0.8, 0.9],
        truth_boxes=[SQUARE, *crowd],
        truth_classes=[0, 0],
        iscrowd=[False, True],
    )
    assert result["map"] == pytest.approx(1.0)
    assert result["counts"]["ignored"] == 1 and result["counts"]["objects"] == 1


def test_per_class_ap_and_its_mean():
    # Class a is found perfectly; class b's only detection is a false positive scored
    # above its hit (AP 0.5); class c has no ground truth and no AP.
    result = one_image(
        [SQUARE, [20, 20, 30, 30], [50, 50, 60, 60]],
        [0.9, 0.5, 0.7],
        classes=[0, 1, 1],
        truth_boxes=[SQUARE, [20, 20, 30, 30]],
        truth_classes=[0, 1],
        names=("a", "b", "c"),
    )
    assert result["per_class"]["a"]["ap"] == pytest.approx(1.0)
    assert result["per_class"]["b"]["ap"] == pytest.approx(0.5)
    assert result["per_class"]["c"] == {"ap": None, "ap_50": None}
    assert result["map"] == pytest.approx(0.75)


def test_no_detections_score_zero():
    result = one_image(np.zeros((0, 4)), [])
    assert result["map"] == 0.0 and result["counts"]["detections"] == 0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="one Detections per image"):
        evaluate([make_truth([SQUARE], [0])], [], ["a"])
    with pytest.raises(ValueError, match="class index 3"):
        one_image([SQUARE], [0.9], classes=[3])
    with pytest.raises(ValueError, match="one row per object"):
        make_truth([SQUARE], [0, 1])


def jittered_detections(truths, rng):
    """Detections near the truth (some missed, some wrong class) plus false positives."""
    found = []
    for truth in truths:
        keep = rng.random(len(truth.boxes)) < 0.8
        boxes = truth.boxes[keep] + rng.normal(0, 2.0, (int(keep.sum()), 4))
        classes = np.where(rng.random(len(boxes)) < 0.9, truth.classes[keep], 0)
        extra = rng.uniform(0, 70, (2, 2))
        boxes = np.concatenate([boxes, np.concatenate([extra, extra + 20], axis=1)])
        classes = np.concatenate([classes, rng.integers(0, 3, 2)])
        found.append(make_detections(boxes, rng.random(len(boxes)), classes))
    return found


def test_equals_pycocotools_run_on_files(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root = write_multi_shapes(tmp_path / "set", n=30, seed=11, objects=(0, 5))
    index = index_coco(root)
    detections = jittered_detections(index.truths(), np.random.default_rng(0))
    ours = evaluate(index.truths(), detections, index.classes)
    # The same detections through pycocotools the way its README uses it: files on disk,
    # the COCO file's own image and category ids.
    doc = json.loads((root / "annotations.json").read_text())
    results = [
        {
            "image_id": image["id"],
            "category_id": int(label) + 1,
            "score": float(score),
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        }
        for image, found in zip(doc["images"], detections)
        for (x0, y0, x1, y1), score, label in zip(found.boxes, found.scores, found.classes)
    ]
    (tmp_path / "results.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO(str(root / "annotations.json"))
        scorer = COCOeval(ground, ground.loadRes(str(tmp_path / "results.json")), "bbox")
        scorer.evaluate()
        scorer.accumulate()
        scorer.summarize()
    for name, value in zip(STATS, scorer.stats):
        assert ours[name] == (None if value < 0 else pytest.approx(value, abs=1e-12)), name
    assert 0.1 < ours["map"] < 0.9  # a case that can tell right from wrong


def test_pycocotools_prints_nothing(capsys):
    one_image([SQUARE], [0.9])
    assert capsys.readouterr().out == ""
