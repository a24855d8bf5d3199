"""Box rules against torchvision.ops (the framework's kept implementation) and their
docstring examples."""

import doctest

import numpy as np
import pytest
import torch
from torchvision import ops

from cnnspec.detection import boxes, postprocess, priors
from cnnspec.detection.boxes import as_boxes, clip, convert, giou, iou, problems


def random_boxes(rng, n, extent=100.0):
    corner = rng.uniform(0, extent, (n, 2))
    return np.concatenate([corner, corner + rng.uniform(0.5, extent / 2, (n, 2))], axis=1)


@pytest.mark.parametrize("module", [boxes, postprocess, priors], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    failed, attempted = doctest.testmod(module)
    assert attempted > 0 and failed == 0


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_convert_matches_torchvision(fmt):
    b = random_boxes(np.random.default_rng(1), 50)
    theirs = ops.box_convert(torch.from_numpy(b), "xyxy", fmt).numpy()
    np.testing.assert_allclose(convert(b, "xyxy", fmt), theirs, rtol=1e-12)
    np.testing.assert_allclose(convert(theirs, fmt, "xyxy"), b, rtol=1e-12, atol=1e-12)


def test_iou_and_giou_match_torchvision():
    rng = np.random.default_rng(2)
    a, b = random_boxes(rng, 40), random_boxes(rng, 30)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    np.testing.assert_allclose(iou(a, b), ops.box_iou(ta, tb).numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        giou(a, b), ops.generalized_box_iou(ta, tb).numpy(), rtol=1e-12, atol=1e-15
    )
    assert (iou(a, b) > 0).any() and (giou(a, b) < 0).any()  # both regimes are exercised


def test_shapes_and_formats_are_checked():
    assert iou([], [[0, 0, 1, 1]]).shape == (0, 1)
    with pytest.raises(ValueError, match="shape \\(N, 4\\)"):
        as_boxes([[1, 2, 3]])
    with pytest.raises(ValueError, match="unknown box format 'yxyx'"):
        convert([[0, 0, 1, 1]], "yxyx", "xyxy")


def test_problems_name_each_bad_box():
    found = problems(
        [[0, 0, 10, 10], [np.nan, 0, 1, 1], [5, 0, 2, 3], [-3, 0, 4, 4], [0, 0, 4, 40.5]],
        width=20,
        height=40,
        tolerance=1.0,
    )
    assert [index for index, _ in found] == [1, 2, 3]
    assert "non-finite" in found[0][1] and "negative" in found[1][1]
    assert "3 px left of the image" in found[2][1]  # 40.5 is within the 1 px tolerance
    assert clip([[-1, 0, 4, 40.5]], 20, 40).tolist() == [[0, 0, 4, 40]]
