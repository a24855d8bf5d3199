"""The dense detection heads of a model, as training and decoding read them.

A `detect` layer (cnnspec.layers.detect) declares its classes, strides, anchors and box coder;
the IR holds the shapes of the maps it reads. Together they are a `HeadInfo`
(cnnspec.detection.priors), the contract with target assignment, losses and decoding.
Framework-free, like the rest of cnnspec.detection.
"""

from __future__ import annotations

from ..ir import Model
from .priors import Geometry, HeadInfo, anchor_sizes


def head_infos(model: Model) -> list[HeadInfo]:
    """One HeadInfo per `detect` output of the model, in the order of its outputs."""
    infos = []
    for name in model.outputs:
        node = model.node(name)
        if node.kind != "detect":
            continue
        layer = node.layer
        shapes = tuple(tuple(model.node(i).shape[:2]) for i in node.inputs)
        anchors = None
        if layer.sizes is not None:
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
                ),
                coder=layer.coder,
                coder_weights=tuple(layer.box_weights),
                extra=layer.extra,
                activation=layer.scores,
            )
        )
    return infos
