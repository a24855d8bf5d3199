"""The dense detection heads of a model, as training and decoding read them.

A `detect` layer (cnnspec.layers.detect) declares its classes, strides, anchors and box coder;
the IR holds the shapes of the maps it reads. Together they are a `HeadInfo`
(cnnspec.detection.priors), the contract with target assignment, losses and decoding.
Framework-free, like the rest of cnnspec.detection.
"""

from __future__ import annotations

from ..ir import Model
from .priors import Geometry, HeadInfo, anchor_sizes, default_box_sizes


def head_infos(model: Model) -> list[HeadInfo]:
    """One HeadInfo per `detect` output of the model, in the order of its outputs."""
    infos = []
    for name in model.outputs:
        node = model.node(name)
        if node.kind != "detect":
            continue
        layer = node.layer
        shapes = tuple(tuple(model.node(i).shape[:2]) for i in node.inputs)
        anchors, steps = None, None
        if layer.sizes is not None and layer.anchors == "ssd":
            # SSD places its boxes by the map's size, not the stride: centre (j + 0.5) *
            # image / map, sizes relative to the image (torchvision's DefaultBoxGenerator)
            h, w = model.input_shape[:2]
            anchors = default_box_sizes(tuple(layer.sizes), tuple(layer.ratios), (h, w))
            steps = tuple((w / mw, h / mh) for mh, mw in shapes)
        elif layer.sizes is not None:
            anchors = tuple(
                anchor_sizes((layer.level_sizes(level),), (layer.ratios,))[0]
                for level in range(len(shapes))
            )
        infos.append(
            HeadInfo(
                output=name,
                classes=layer.classes,
                geometry=Geometry(
                    strides=tuple(layer.strides),
                    shapes=shapes,
                    anchors=anchors,
                    offset=layer.offset,
                    **({} if steps is None else {"steps": steps, "rounded": False}),
                ),
                coder=layer.coder,
                coder_weights=tuple(layer.box_weights),
                extra=layer.extra,
                activation=layer.scores,
            )
        )
    return infos
