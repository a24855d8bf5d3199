"""What the parity tests ask of a network that a backend built: each node's output shape and
the parameter counts, as the IR has them, checked with the framework's own objects (a torch
forward pass, `parameters()` and buffers; Keras layer outputs and `count_params()`)."""

from __future__ import annotations

import cnnspec


def every_node_out(model: cnnspec.Model) -> cnnspec.Model:
    """The same network with every node an output, to see every tensor."""
    return model.model_copy(update={"outputs": [n.name for n in model.nodes[1:]]})


def nchw(shape) -> tuple:
    return (shape[2], shape[0], shape[1]) if len(shape) == 3 else tuple(shape)


def check_torch_shapes_and_counts(model: cnnspec.Model) -> None:
    """Every node's output in a forward pass has the IR's shape; parameters are the trainable
    count and batch-norm statistics the non-trainable one."""
    import torch

    from cnnspec.backends.torch import build

    net = build(every_node_out(model)).eval()
    with torch.no_grad():
        outs = net(torch.randn(2, *nchw(model.input_shape)))
    outs = outs if isinstance(outs, tuple) else (outs,)
    assert len(outs) == len(model.nodes) - 1
    for node, out in zip(model.nodes[1:], outs, strict=True):
        assert tuple(out.shape) == (2, *nchw(node.shape)), node.name
    trainable = sum(p.numel() for p in net.parameters())
    stats = sum(b.numel() for n, b in net.named_buffers() if not n.endswith("num_batches_tracked"))
    assert (trainable, stats) == (model.trainable, model.non_trainable)


def check_keras_shapes_and_counts(model: cnnspec.Model, kmodel) -> None:
    """count_params() is the IR's total, trainable and non-trainable weights its two counts,
    and the last Keras layer of each node's recipe has the node's shape."""
    import numpy as np

    from cnnspec.backends.keras import recipes

    assert kmodel.count_params() == model.params
    assert sum(int(np.prod(w.shape)) for w in kmodel.trainable_weights) == model.trainable
    assert sum(int(np.prod(w.shape)) for w in kmodel.non_trainable_weights) == model.non_trainable
    for node, _, recipe in recipes(model):
        got = tuple(kmodel.get_layer(recipe[-1][1]["name"]).output.shape[1:])
        assert got == model.node(node).shape, node
    assert [tuple(t.shape[1:]) for t in kmodel.outputs] == model.output_shapes
