"""Priors against torchvision's own anchor generator: the order and the boxes a dense head's
output is read with (cnnspec.detection.priors)."""

import numpy as np
import pytest

from cnnspec.detection.priors import (
    Geometry,
    HeadInfo,
    anchor_boxes,
    anchor_sizes,
    points,
    strides,
)


def test_anchor_boxes_equal_torchvisions_anchor_generator():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    sizes = tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in (32, 64, 128))
    ratios = ((0.5, 1.0, 2.0),) * 3
    generator = AnchorGenerator(sizes, ratios)
    image = torch.zeros(1, 3, 128, 96)
    maps = [torch.zeros(1, 8, 128 // s, 96 // s) for s in (8, 16, 32)]
    expected = generator(ImageList(image, [(128, 96)]), maps)[0].numpy()

    geometry = Geometry(
        strides=(8, 16, 32),
        shapes=tuple((128 // s, 96 // s) for s in (8, 16, 32)),
        anchors=anchor_sizes(sizes, ratios),
    )
    assert geometry.count == len(expected)
    np.testing.assert_allclose(anchor_boxes(geometry), expected, atol=1e-4)


def test_points_and_strides_follow_the_output_order():
    geometry = Geometry(strides=(8, 16), shapes=((2, 3), (1, 2)), offset=0.5)
    assert points(geometry).tolist() == [
        [4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12], [8, 8], [24, 8],
    ]  # fmt: skip
    assert strides(geometry).tolist() == [8] * 6 + [16] * 2


def test_head_info_refuses_a_coder_its_geometry_cannot_serve():
    free = Geometry(strides=(8,), shapes=((4, 4),))
    assert HeadInfo("out", 3, free, extra="objectness").columns == 8
    with pytest.raises(ValueError, match="offsets need anchors"):
        HeadInfo("out", 3, free, coder="offsets")
    with pytest.raises(ValueError, match="extra"):
        HeadInfo("out", 3, free, extra="quality")
