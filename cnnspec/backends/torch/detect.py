"""The `detect` head in PyTorch, as data (a TorchOp), with torchvision's module paths.

A shared head (RetinaNet, FCOS) is torchvision's RetinaNetHead / FCOSHead:
    classification_head.conv.{j}.{0: conv, 1: norm, 2: act}   classification_head.cls_logits
    regression_head.conv.{j}...   regression_head.bbox_reg   [regression_head.bbox_ctrness]
so its state_dict keys are torchvision's where the tower has no norm (RetinaNet); FCOS's
tower is one flat Sequential there (conv.0, conv.1 (GroupNorm), conv.3...), the same tensors
in the same order. A separate head (SSD) is SSDHead's `module_list.{level}` of each branch.

Forward expressions have no local variables, so a value used twice would be computed twice.
The box predictor and the extra predictor (FCOS's centre-ness) read the same tower output:
their weights are joined into one conv (one call of F.conv2d, extra first then box for each
anchor) and FCOS's relu on distances is a per-channel prelu (slope 0 on box channels, 1 on
the extra, made with ones_like beside the weights). The classes then sit between box and
extra after one roll of the columns: [classes, extra, box] -> [box, classes, extra].
Expressions are nested calls rather than method chains, which the source layout can split
within its line width.
"""

from __future__ import annotations

from ... import layers
from .. import torch_emit as te

_ACT_MODULES = {
    "relu": "nn.ReLU",
    "relu6": "nn.ReLU6",
    "silu": "nn.SiLU",
    "gelu": "nn.GELU",
    "hard_swish": "nn.Hardswish",
}


def _conv(cin: int, cout: int, kernel, bias: bool = True, groups: int = 1) -> te.Call:
    return te.call(
        "nn.Conv2d",
        cin,
        cout,
        kernel_size=te.one(kernel),
        **te.kwargs_unless_default(
            padding=(te.one((kernel[0] // 2, kernel[1] // 2)), 0),
            groups=(groups, 1),
            bias=(bias, True),
        ),
    )


def _tower(layer, channels: int) -> list[te.Call]:
    """The tower's convs, each a Sequential(conv, [norm], [act]) as torchvision's
    Conv2dNormActivation."""
    eps = te.kwargs_unless_default(eps=(layer.eps, 1e-5))
    convs = []
    for cin, cout in layer.tower_convs(channels):
        parts = [
            _conv(
                cin,
                cout,
                layer.kernel,
                bias=layer.norm != "bn",
                groups=cin if layer.depthwise else 1,
            )
        ]
        if layer.norm == "gn":
            parts.append(te.call("nn.GroupNorm", layer.groups, cout, **eps))
        elif layer.norm == "bn":
            parts.append(te.call("nn.BatchNorm2d", cout, **eps))
        if layer.act is not None:
            parts.append(te.call(_ACT_MODULES[layer.act], inplace=True))
        convs.append(te.call("nn.Sequential", *parts))
    return convs


def _predictor_in(layer, channels: int) -> int:
    return layer.tower_width(channels) if layer.tower else channels


def _to_priors(t, shape, per_cell: int, columns: int):
    """(N, A*cols, H, W) -> (N, H*W*A, cols): channels last, then anchors split off the
    channels (channel a*cols + c), the order of torchvision's view / permute / reshape."""
    h, w, _ = shape
    return te.call(
        "torch.reshape", te.call("torch.permute", t, (0, 2, 3, 1)), (-1, h * w * per_cell, columns)
    )


def _shared(layer, shapes) -> te.TorchOp:
    c = shapes[0][2]
    cin = _predictor_in(layer, c)
    a, k, e = layer.per_cell, layer.classes, layer.extras
    cls_out, _ = layer.predictor_outputs()
    cls_head = te.call(
        "nn.ModuleDict",
        [
            ("conv", te.call("nn.Sequential", *_tower(layer, c))),
            ("cls_logits", _conv(cin, cls_out, layer.predictor)),
        ],
    )
    box_parts = [
        ("conv", te.call("nn.Sequential", *_tower(layer, c))),
        ("bbox_reg", _conv(cin, 4 * a, layer.predictor)),
    ]
    name = "bbox_ctrness" if layer.extra == "centerness" else "objectness"
    if e:
        box_parts.append((name, _conv(cin, a, layer.predictor)))
    setup = [
        ("classification_head", cls_head),
        ("regression_head", te.call("nn.ModuleDict", box_parts)),
    ]

    cls_head_ref, box_head_ref = te.Attr("classification_head"), te.Attr("regression_head")
    pad = te.one((layer.predictor[0] // 2, layer.predictor[1] // 2))
    if e:
        # extra first, then the box, per anchor: one conv over the one tower output; the
        # joined channels [extra (A), box (4A)] reordered to anchor-major where A > 1
        order = [
            c for j in range(a) for c in (j, a + 4 * j, a + 4 * j + 1, a + 4 * j + 2, a + 4 * j + 3)
        ]

        def joined(part: str):
            cat = te.call(
                "torch.cat",
                [
                    te.method(box_head_ref, "get_parameter", f"{name}.{part}"),
                    te.method(box_head_ref, "get_parameter", f"bbox_reg.{part}"),
                ],
            )
            return cat if a == 1 else te.Index(cat, (order,))

    levels = []
    for i, shape in enumerate(shapes):
        x = te.In(i)
        cls = te.method(cls_head_ref, "cls_logits", te.method(cls_head_ref, "conv", x))
        cls = _to_priors(cls, shape, a, k)
        feat = te.method(box_head_ref, "conv", x)
        if e:
            box = te.call("F.conv2d", feat, joined("weight"), joined("bias"), padding=pad)
            if layer.box_relu:
                # per anchor: extra (slope 1: as it is), then the 4 distances (slope 0: relu);
                # made beside the weights (same device), not held: a buffer would be state
                ones = te.call(
                    "torch.ones_like", te.method(box_head_ref, "get_parameter", f"{name}.bias")
                )
                if a > 1:
                    ones = te.call("torch.reshape", ones, (a, 1))
                slopes = te.call("F.pad", ones, (0, 4))
                if a > 1:
                    slopes = te.call("torch.reshape", slopes, (-1,))
                box = te.call("F.prelu", box, slopes)
            levels.append(te.call("torch.cat", [cls, _to_priors(box, shape, a, 5)], 2))
        else:
            box = te.method(box_head_ref, "bbox_reg", feat)
            if layer.box_relu:
                box = te.call("F.relu", box)
            levels.append(te.call("torch.cat", [_to_priors(box, shape, a, 4), cls], 2))
    out = levels[0] if len(levels) == 1 else te.call("torch.cat", levels, 1)
    if e:
        out = te.call("torch.roll", out, 4, 2)  # [classes, extra, box] -> [box, classes, extra]
    return te.TorchOp(module=te.call("nn.Module"), setup=tuple(setup), forward=out, fresh=True)


def _separate(layer, shapes) -> te.TorchOp:
    """SSDHead: per level, Sequential(tower..., predictor) in each branch's module_list."""
    a, k = layer.per_cell, layer.classes
    cls_out, box_out = layer.predictor_outputs()
    branches = []
    for outputs in (cls_out, box_out):
        levels = [
            te.call(
                "nn.Sequential",
                *_tower(layer, s[2]),
                _conv(_predictor_in(layer, s[2]), outputs, layer.predictor),
            )
            for s in shapes
        ]
        branches.append(
            te.call("nn.ModuleDict", [("module_list", te.call("nn.ModuleList", levels))])
        )
    setup = (("classification_head", branches[0]), ("regression_head", branches[1]))

    def run(head: str, i: int):
        # the level's Sequential called as a value: a call, not a method chain, so that the
        # generated line can be split within its width
        level = te.method(te.Attr(head), "get_submodule", f"module_list.{i}")
        return te.call("nn.Module.__call__", level, te.In(i))

    levels = []
    for i, shape in enumerate(shapes):
        cls = _to_priors(run("classification_head", i), shape, a, k)
        box = run("regression_head", i)
        if layer.box_relu:
            box = te.call("F.relu", box)
        levels.append(te.call("torch.cat", [_to_priors(box, shape, a, 4), cls], 2))
    out = levels[0] if len(levels) == 1 else te.call("torch.cat", levels, 1)
    return te.TorchOp(module=te.call("nn.Module"), setup=setup, forward=out, fresh=True)


def detect(layer: layers.Layer, shapes) -> te.TorchOp:
    return _shared(layer, shapes) if layer.shared else _separate(layer, shapes)
