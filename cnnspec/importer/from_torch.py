"""torchvision models -> Graph, through torch.fx symbolic tracing with shapes propagated.

Each traced call becomes one op with the spec's semantics: torch's symmetric `padding=P`
stays `padding=P`; BatchNorm2d's momentum m becomes the spec's (Keras') 1 - m; an adaptive
average pool to 1x1 is `gap` (its flatten then has nothing left to do); an adaptive pool whose
output equals its input (VGG's 7x7 at 224x224) is dropped with a note, since it is the
identity only at that input size. ConvNeXt's channels-last stretch (permute, layer norm,
Linear, permute) is `layernorm` and `dense N per_pixel`, its learned (C, 1, 1) factor
`layerscale`; ShuffleNetV2's x.chunk(2, dim=1) items are `split 2 I` and its channel shuffle
(size, view, transpose, view) is `shuffle G`. A construct the language does not have yet
(a split into unequal parts, another permutation of axes) is refused with E417 naming it;
anything else with an E41x error naming the module.
"""

from __future__ import annotations

import operator

from ..errors import SpecError
from .ops import Graph, Op, missing, scalar, size, unsupported, window

ACTIVATIONS = {
    "ReLU": "relu",
    "ReLU6": "relu6",
    "SiLU": "silu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Hardswish": "hard_swish",
    "Hardsigmoid": "hard_sigmoid",
    "ELU": "elu",
    "LeakyReLU": "leaky_relu",
    "GELU": "gelu",
}


def load_torchvision(name: str):
    """torchvision.models.<name>(weights=None), or an E410 error."""
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise SpecError(
            "E410",
            f"torchvision has no model '{name}'",
            hint="see torchvision.models.list_models()",
        ) from None
    import inspect
    import warnings

    kwargs = {}
    if "aux_logits" in inspect.signature(builder).parameters or name in AUXILIARY:
        # GoogLeNet's and Inception v3's auxiliary classifiers serve training only (eval's
        # forward never calls them); torchvision drops them from its pretrained models too
        kwargs["aux_logits"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # their init_weights notice
        return builder(weights=None, **kwargs).eval()


AUXILIARY = {"googlenet", "inception_v3"}


def counts(module) -> tuple[int, int]:
    """(parameters, running statistics): torch's parameters() and the BN buffers that hold
    weights. num_batches_tracked is left out: a step counter, not a weight of the network."""
    trainable = sum(p.numel() for p in module.parameters())
    stats = sum(
        b.numel() for n, b in module.named_buffers() if n.endswith(("running_mean", "running_var"))
    )
    return trainable, stats


def read(module, source: str, input_shape: tuple[int, int, int]) -> Graph:
    """The traced module as a Graph, for an input of `input_shape` (H, W, C)."""
    import torch
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        traced = symbolic_trace(module)
    except Exception as exc:  # noqa: BLE001  (fx raises many types: control flow, proxies)
        raise SpecError("E414", f"{source}: torch.fx cannot trace the model ({exc})") from None
    h, w, c = input_shape
    ShapeProp(traced).propagate(torch.zeros(1, c, h, w))
    graph = Graph(
        source=source,
        input_shape=input_shape,
        counts=counts(module),
        module_types={p: type(m).__name__ for p, m in module.named_modules()},
    )
    reader = _Reader(traced, graph)
    for node in traced.graph.nodes:
        reader.visit(node)
    _check_all_used(module, traced)
    return graph


def _check_all_used(module, traced) -> None:
    """Modules with weights that the (eval) forward never calls, such as GoogLeNet's
    auxiliary classifiers, would make the spec count less than the model: refuse them."""
    called = {n.target for n in traced.graph.nodes if n.op == "call_module"}
    # a module whose forward the tracer inlined (LayerNorm2d) reads its parameters by get_attr
    called |= {n.target.rpartition(".")[0] for n in traced.graph.nodes if n.op == "get_attr"}
    for path, mod in module.named_modules():
        own = list(mod.parameters(recurse=False))
        if own and path not in called and not any(c.startswith(path + ".") for c in called):
            raise unsupported(
                path,
                type(mod).__name__,
                "it has weights but the forward pass (in eval mode) does not use it",
                code="E412",
                hint="build the model without it (e.g. aux_logits=False)",
            )


def _shape(node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


class _Reader:
    def __init__(self, traced, graph: Graph):
        self.traced, self.graph = traced, graph
        self.alias: dict[str, str] = {}  # fx node -> the op that stands for its value
        # nodes whose value is channels-last (N, H, W, C): ConvNeXt permutes around its layer
        # norms and linears; the spec is channels-last throughout, so the permutes vanish
        self.last: set[str] = set()
        self.params: dict[str, str] = {}  # get_attr node -> the parameter's path
        # ShuffleNet's channel shuffle is traced as size, view to (N, G, C/G, H, W),
        # transpose(1, 2), contiguous, view back: sizes are not tensors (no op), the 5-d
        # views are held here (node -> G; `swapped` once transposed) until the view back
        self.sizes: set[str] = set()
        self.grouped: dict[str, int] = {}
        self.swapped: dict[str, int] = {}
        self.chunks: dict[str, int] = {}  # x.chunk(n, dim=1) -> n (its items are splits)

    def src(self, node) -> str:
        return self.alias.get(node.name, node.name)

    def emit(self, node, source_type: str, word: str, args=(), inputs=None) -> None:
        ins = inputs if inputs is not None else [self.src(node.args[0])]
        path = node.target if node.op == "call_module" else None
        self.graph.add(Op(node.name, source_type, word, list(args), ins, path=path))

    def visit(self, node) -> None:
        if node.op == "placeholder":
            self.graph.input_name = node.name
        elif node.op == "output":
            out = node.args[0]
            outs = out if isinstance(out, (tuple, list)) else [out]
            self.graph.outputs = [self.src(o) for o in outs]
        elif node.op == "call_module":
            mod = self.traced.get_submodule(node.target)
            self.module(node, node.target, type(mod).__name__, mod)
        elif node.op == "call_function":
            self.function(node)
        elif node.op == "call_method" and node.target == "flatten":
            args = list(node.args[1:]) + [-1] * (3 - len(node.args))
            start = node.kwargs.get("start_dim", args[0] if len(node.args) > 1 else 0)
            end = node.kwargs.get("end_dim", args[1] if len(node.args) > 2 else -1)
            self.flatten(node, node.name, "Tensor.flatten", start, end)
        elif node.op == "get_attr":
            self.params[node.name] = node.target  # read by the call that uses it
        elif node.op == "call_method" and node.target == "permute":
            self.permute(node, node.args[1:])
        elif node.op == "call_method" and node.target in SHUFFLE_STEPS:
            self.shuffle_step(node, node.target)
        elif node.op == "call_method" and node.target == "chunk":
            self.chunk(node)
        elif node.op == "call_method" and node.target == "mean" and self._spatial_mean(node):
            keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
            self.emit(node, "Tensor.mean", "gap", [("flag", "keepdims")] if keep else [])
        else:
            raise self.construct(node)

    def construct(self, node) -> SpecError:
        """E417 naming the construct a node belongs to, where it is one the language lacks;
        else E414 naming the node."""
        name = (
            node.target
            if node.op == "call_method"
            else getattr(node.target, "__name__", str(node.target))
        )
        kind = f"Tensor.{name}" if node.op == "call_method" else name
        found = _construct(node, self.traced)
        if found:
            return missing(node.name, kind, found)
        return unsupported(
            node.name,
            f"{node.op} {node.target}",
            "only calls of modules and functions are read",
            code="E414",
        )

    def _spatial_mean(self, node) -> bool:
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
        return len(_shape(node.args[0])) == 4 and sorted(
            d % 4 for d in dims if isinstance(d, int)
        ) == [2, 3]

    # --- modules ---------------------------------------------------------------------------
    def module(self, node, path: str, kind: str, mod) -> None:
        handler = getattr(self, f"_m_{kind}", None)
        if kind in ACTIVATIONS:
            self.activation(node, path, kind, mod)
        elif handler is None:
            raise unsupported(path, kind)
        else:
            handler(node, path, mod)

    def activation(self, node, path, kind, mod):
        args = []
        if kind == "LeakyReLU" and mod.negative_slope != 0.01:
            args = [("pos", float(mod.negative_slope))]
        if kind == "ELU" and mod.alpha != 1.0:
            args = [("pos", float(mod.alpha))]
        if kind == "GELU" and mod.approximate != "none":
            raise unsupported(
                path, kind, "the tanh approximation of gelu is not a cnnspec activation"
            )
        self.emit(node, kind, ACTIVATIONS[kind], args)
        if node.args[0].name in self.last:  # elementwise: the layout stays
            self.last.add(node.name)

    def _m_Conv2d(self, node, path, mod):
        if mod.padding_mode != "zeros":
            raise unsupported(
                path, "Conv2d", f"padding_mode='{mod.padding_mode}' (the spec pads with zeros)"
            )
        cin, cout, g = mod.in_channels, mod.out_channels, mod.groups
        pad = mod.padding
        if pad == "same":
            pad = tuple((k - 1) // 2 for k in mod.kernel_size)
            if any(k % 2 == 0 for k in mod.kernel_size):
                raise unsupported(
                    path,
                    "Conv2d",
                    "padding='same' with an even kernel pads "
                    "unevenly the other way round from TensorFlow",
                )
        args = []
        if g == cin and cout % cin == 0 and g > 1:
            word = "dwconv"
            args.append(("pos", size(mod.kernel_size)))
            if cout != cin:
                args.append(("kw", "multiplier", cout // cin))
        else:
            word = "conv"
            args += [("pos", cout), ("pos", size(mod.kernel_size))]
            if g > 1:
                args.append(("kw", "groups", g))
        args += _window(mod.stride, pad, mod.dilation)
        if mod.bias is None:
            args.append(("flag", "nobias"))
        self.emit(node, "Conv2d", word, args)

    def _m_BatchNorm2d(self, node, path, mod):
        if not mod.track_running_stats:
            raise unsupported(
                path,
                "BatchNorm2d",
                "track_running_stats=False (the spec's batch norm keeps running statistics)",
            )
        args = []
        if mod.eps != 1e-5:
            args.append(("kw", "eps", float(mod.eps)))
        if mod.momentum is None:
            raise unsupported(path, "BatchNorm2d", "momentum=None (a cumulative average)")
        if abs(mod.momentum - 0.1) > 1e-12:  # torch m = 1 - Keras momentum
            args.append(("kw", "momentum", round(1 - mod.momentum, 10)))
        if not mod.affine:
            args += [("flag", "noscale"), ("flag", "nocenter")]
        self.emit(node, "BatchNorm2d", "bn", args)

    def _pool(self, node, path, kind, mod, word):
        if kind == "MaxPool2d" and scalar(mod.dilation) != 1:
            raise unsupported(path, kind, f"dilation={mod.dilation}")
        counted = kind == "AvgPool2d" and mod.count_include_pad
        self.pool(
            node, path, kind, word, mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode, counted
        )

    def pool(self, node, path, kind, word, kernel, stride, padding, ceil, counted=False):
        """A pooling; an average that counts its padding (torch's default count_include_pad)
        is `zeropad P; avgpool K` (the zeros are then inputs, counted), which is exact."""
        pad = scalar(padding)
        stride = scalar(stride if stride else kernel)
        args = [("pos", window(kernel))]
        if stride != scalar(kernel):
            args.append(("kw", "stride", stride))
        inputs = [self.src(node.args[0])]
        if pad != 0 and counted:
            if ceil:
                raise unsupported(
                    path,
                    kind,
                    "count_include_pad=True with ceil_mode=True "
                    "(the window past the padding counts no zeros)",
                )
            pads = pad if isinstance(pad, int) else (pad[0], pad[0], pad[1], pad[1])
            name = f"{node.name}_pad"
            self.graph.add(
                Op(
                    name,
                    kind,
                    "zeropad",
                    [("pos", pads)],
                    inputs,
                    path=node.target if node.op == "call_module" else None,
                )
            )
            inputs, pad = [name], 0
        if pad != 0:
            args.append(("kw", "padding", pad))
        if ceil:
            args.append(("kw", "ceil", True))
        self.emit(node, kind, word, args, inputs)

    def _m_MaxPool2d(self, node, path, mod):
        self._pool(node, path, "MaxPool2d", mod, "maxpool")

    def _m_AvgPool2d(self, node, path, mod):
        self._pool(node, path, "AvgPool2d", mod, "avgpool")

    def _m_AdaptiveAvgPool2d(self, node, path, mod):
        self.adaptive(node, path, "AdaptiveAvgPool2d", "avg")

    def _m_AdaptiveMaxPool2d(self, node, path, mod):
        self.adaptive(node, path, "AdaptiveMaxPool2d", "max")

    def _m_LayerNorm(self, node, path, mod):
        self.layer_norm(
            node,
            path,
            "LayerNorm",
            tuple(mod.normalized_shape),
            mod.eps,
            mod.elementwise_affine,
            mod.bias is not None,
        )

    def _m_StochasticDepth(self, node, path, mod):
        self.stochastic_depth(node, path, "StochasticDepth", mod.p, mod.mode)

    def _m_Linear(self, node, path, mod):
        args = [("pos", mod.out_features)] + ([] if mod.bias is not None else [("flag", "nobias")])
        if node.args[0].name in self.last:  # over the channels of each pixel (ConvNeXt)
            self.emit(node, "Linear", "dense", [*args, ("flag", "per_pixel")])
            self.last.add(node.name)
            return
        self.emit(node, "Linear", "dense", args)

    def _m_Dropout(self, node, path, mod):
        self.emit(node, "Dropout", "dropout", [("pos", float(mod.p))])

    def _m_Identity(self, node, path, mod):
        self.alias[node.name] = self.src(node.args[0])

    def _m_Flatten(self, node, path, mod):
        self.flatten(node, path, "Flatten", mod.start_dim, mod.end_dim)

    def _m_Softmax(self, node, path, mod):
        if mod.dim not in (1, -1):
            raise unsupported(
                path, "Softmax", f"dim={mod.dim} (the spec's softmax runs over the channels)"
            )
        self.emit(node, "Softmax", "softmax")

    # --- functions -------------------------------------------------------------------------
    def function(self, node) -> None:
        import torch
        import torch.nn.functional as F

        fn = node.target
        name = getattr(fn, "__name__", str(fn))
        if fn in (operator.mul, torch.mul) and self._layer_scale(node):
            return
        if fn is operator.getitem and self.item(node):
            return
        if fn is operator.floordiv and any(
            getattr(a, "name", None) in self.sizes for a in node.args
        ):
            self.sizes.add(node.name)  # channels per group: arithmetic on sizes
            return
        if fn is torch.transpose:
            self.shuffle_step(node, "transpose")
            return
        if fn in (operator.add, operator.iadd, torch.add, operator.mul, torch.mul):
            word = "add" if fn in (operator.add, operator.iadd, torch.add) else "multiply"
            if len(node.args) != 2 or not all(hasattr(a, "op") for a in node.args) or node.kwargs:
                raise unsupported(node.name, name, "only the sum or product of two tensors")
            self.emit(node, name, word, inputs=[self.src(a) for a in node.args])
        elif fn is torch.cat:
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if dim != 1:
                raise unsupported(
                    node.name, "torch.cat", f"dim={dim} (the spec concatenates channels)"
                )
            if len(node.args[0]) == 1:  # DenseNet's cat of one tensor: that tensor
                self.alias[node.name] = self.src(node.args[0][0])
                return
            self.emit(node, "torch.cat", "concat", inputs=[self.src(a) for a in node.args[0]])
        elif fn is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            self.flatten(node, node.name, "torch.flatten", start, end)
        elif fn in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            self.adaptive(node, node.name, name, "avg" if "avg" in name else "max")
        elif fn in (F.relu, torch.relu, F.relu6):
            self.emit(node, name, "relu6" if fn is F.relu6 else "relu")
        elif fn in (F.dropout,):
            self.emit(node, name, "dropout", [("pos", float(node.kwargs.get("p", 0.5)))])
        elif fn in (F.avg_pool2d, F.max_pool2d):
            self.function_pool(node, name)
        elif name == "stochastic_depth":
            given = dict(zip(["input", "p", "mode", "training"], node.args), **node.kwargs)
            self.stochastic_depth(node, node.name, name, given["p"], given.get("mode", "row"))
        elif fn is torch.permute:
            self.permute(node, node.args[1] if len(node.args) == 2 else node.args[1:])
        elif fn is F.layer_norm:
            given = dict(
                zip(["input", "normalized_shape", "weight", "bias", "eps"], node.args),
                **node.kwargs,
            )
            weight, bias = given.get("weight"), given.get("bias")
            path = self.params.get(getattr(weight, "name", ""), "").rpartition(".")[0]
            self.layer_norm(
                node,
                path or node.name,
                name,
                tuple(given["normalized_shape"]),
                given.get("eps", 1e-5),
                weight is not None,
                bias is not None,
                path or None,
            )
        else:
            raise self.construct(node)

    def shuffle_step(self, node, step: str) -> None:
        """One step of a channel shuffle (see __init__); anything else of these is E417."""
        x = node.args[0]
        src = getattr(x, "name", None)
        if step == "size":
            self.sizes.add(node.name)
            return
        if step == "contiguous":  # a memory layout, not a value
            self.alias[node.name] = self.src(x)
            for held in (self.grouped, self.swapped):
                if src in held:
                    held[node.name] = held[src]
            if src in self.last:
                self.last.add(node.name)
            return
        shape_in, shape_out = _shape(x), _shape(node)
        if step == "transpose" and src in self.grouped and sorted(node.args[1:]) == [1, 2]:
            self.swapped[node.name] = self.grouped[src]
            self.alias[node.name] = self.src(x)
        elif step in ("view", "reshape") and len(shape_in) == 4 and len(shape_out) == 5:
            if shape_out[1] * shape_out[2] == shape_in[1] and shape_out[3:] == shape_in[2:]:
                self.grouped[node.name] = shape_out[1]
                self.alias[node.name] = self.src(x)
            else:
                raise self.construct(node)
        elif step in ("view", "reshape") and src in self.swapped and len(shape_out) == 4:
            self.emit(node, "channel shuffle", "shuffle", [("pos", self.swapped[src])])
            self.graph.ops[-1].path = _caller(node)
        else:
            raise self.construct(node)

    def chunk(self, node) -> None:
        """x.chunk(n, dim=1): its items become `split n i` (ShuffleNetV2's two halves)."""
        given = dict(zip(["chunks", "dim"], node.args[1:]), **node.kwargs)
        n, dim = given.get("chunks"), given.get("dim", 0)
        c = _shape(node.args[0])[1]
        if dim not in (1, -3):
            raise missing(node.name, "Tensor.chunk", f"a split along axis {dim}")
        if not isinstance(n, int) or c % n:
            raise missing(
                node.name, "Tensor.chunk", f"a channel split into unequal parts ({c} by {n})"
            )
        self.chunks[node.name] = n

    def item(self, node) -> bool:
        """An item of a size (no op) or of a chunk (a split); False for anything else."""
        of, index = node.args
        name = getattr(of, "name", None)
        if name in self.sizes:
            self.sizes.add(node.name)
            return True
        if name in self.chunks and isinstance(index, int):
            parts = self.chunks[name]
            self.emit(
                node,
                "Tensor.chunk",
                "split",
                [("pos", parts), ("pos", index % parts)],
                inputs=[self.src(of.args[0])],
            )
            self.graph.ops[-1].path = _caller(node)
            return True
        return False

    def permute(self, node, dims) -> None:
        """NCHW -> NHWC and back are the identity in the spec's channels-last tensors."""
        dims, src, last = tuple(dims), self.src(node.args[0]), node.args[0].name in self.last
        if dims == (0, 2, 3, 1) and not last:
            self.last.add(node.name)
        elif not (dims == (0, 3, 1, 2) and last):
            raise missing(node.name, "permute", f"a permutation of axes {dims}")
        self.alias[node.name] = src

    def layer_norm(self, node, path, kind, shape, eps, scale, center, module=None) -> None:
        src = self.src(node.args[0])
        if node.args[0].name not in self.last or shape != _shape(node.args[0])[-1:]:
            raise missing(
                path,
                kind,
                f"layer norm over {shape} of a {_shape(node.args[0])} "
                "tensor (the spec's layernorm is over the channels of each pixel)",
            )
        if scale != center:
            raise unsupported(path, kind, "a scale without a bias, or the other way round")
        args = [] if eps == 1e-5 else [("kw", "eps", float(eps))]
        args += [] if scale else [("flag", "noscale"), ("flag", "nocenter")]
        self.graph.add(
            Op(
                node.name,
                kind,
                "layernorm",
                args,
                [src],
                path=module
                if module is not None
                else (node.target if node.op == "call_module" else None),
            )
        )
        self.last.add(node.name)

    def stochastic_depth(self, node, path, kind, p, mode) -> None:
        # torchvision's StochasticDepth: whole samples ("row") dropped in training
        if mode != "row":
            raise unsupported(
                path, kind, f"mode='{mode}' (the spec drops whole samples, mode='row')"
            )
        self.emit(node, kind, "stochastic_depth", [("pos", float(p))])

    def _layer_scale(self, node) -> bool:
        """A learned (C, 1, 1) parameter times a tensor: ConvNeXt's layer scale."""
        params = [a for a in node.args if getattr(a, "name", None) in self.params]
        others = [a for a in node.args if a not in params]
        if len(params) != 1 or len(others) != 1 or node.kwargs:
            return False
        c = _shape(node)[1]
        if tuple(params[0].meta["tensor_meta"].shape) != (c, 1, 1):
            return False
        path = self.params[params[0].name].rpartition(".")[0] or None
        self.graph.add(
            Op(node.name, "layer_scale", "layerscale", [], [self.src(others[0])], path=path)
        )
        return True

    def function_pool(self, node, name):
        import torch.nn.functional as F

        avg = node.target is F.avg_pool2d
        names = (
            ["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"]
            if avg
            else ["kernel_size", "stride", "padding", "dilation", "ceil_mode"]
        )
        given = dict(zip(names, node.args[1:]), **node.kwargs)
        if not avg and scalar(given.get("dilation", 1)) != 1:
            raise unsupported(node.name, name, f"dilation={given['dilation']}")
        if avg and given.get("divisor_override"):
            raise unsupported(node.name, name, "divisor_override (a fixed divisor)")
        self.pool(
            node,
            node.name,
            name,
            "avgpool" if avg else "maxpool",
            given["kernel_size"],
            given.get("stride"),
            given.get("padding", 0),
            given.get("ceil_mode", False),
            avg and given.get("count_include_pad", True),
        )

    def flatten(self, node, path, kind, start, end):
        if start != 1 or end != -1:
            raise unsupported(
                path,
                kind,
                f"start_dim={start}, end_dim={end} (the spec flattens everything but the batch)",
            )
        shape = _shape(node.args[0])
        if (
            len(shape) == 2
            or self.graph.ops
            and self.graph.ops[-1].name == self.src(node.args[0])
            and self.graph.ops[-1].word in ("gap", "gmp")
        ):
            self.alias[node.name] = self.src(node.args[0])  # already a vector
            return
        if shape[2] * shape[3] > 1:
            self.graph.notes.append(
                f"'{path}' flattens a {shape[1]}x{shape[2]}x{shape[3]} (CxHxW) map in torch's "
                "C,H,W order; 'flatten' here is H,W,C, so the next dense layer's weights are "
                "permuted when torchvision weights are loaded (load_torchvision_state_dict)."
            )
        self.emit(node, kind, "flatten")

    def adaptive(self, node, path, kind, op):
        (_, _c, h, w), (_, _, oh, ow) = _shape(node.args[0]), _shape(node)
        if (oh, ow) == (h, w):
            self.graph.notes.append(
                f"'{path}' ({kind} to {oh}x{ow}) is the identity at this input size and is "
                f"left out: the spec assumes the input size it was imported with."
            )
            self.alias[node.name] = self.src(node.args[0])
        elif (oh, ow) == (1, 1):
            self.emit(
                node,
                kind,
                "gap" if op == "avg" else "gmp",
                [] if self._only_flattened(node) else [("flag", "keepdims")],
            )
        elif h % oh == 0 and w % ow == 0:
            k = window((h // oh, w // ow))
            self.emit(node, kind, f"{op}pool", [("pos", k)])
            self.graph.notes.append(
                f"'{path}' ({kind} to {oh}x{ow}) is a {op}pool of "
                f"{h // oh}x{w // ow} at this input size only."
            )
        else:
            raise unsupported(
                path,
                kind,
                f"{h}x{w} -> {oh}x{ow} is no fixed window at this input size",
                hint="import with an input size where the pooled "
                "map divides evenly (--input), e.g. 224x224x3",
            )

    def _only_flattened(self, node) -> bool:
        import torch

        return bool(node.users) and all(
            (u.op == "call_function" and u.target is torch.flatten)
            or (u.op == "call_method" and u.target == "flatten")
            for u in node.users
        )


# torch calls that belong to constructs the language does not have yet (issue 16)
CALLS = {
    "layer_norm": "layer norm",
    "group_norm": "group norm",
    "chunk": "channel split (Tensor.chunk)",
    "split": "channel split (Tensor.split)",
    "getitem": "channel split (a tensor indexed)",
}
SHUFFLE_STEPS = {"size", "view", "reshape", "contiguous"}
SHUFFLE = {"size", "view", "reshape", "transpose", "contiguous", "floordiv"}


def _construct(node, traced) -> str | None:
    """The construct an unreadable node belongs to: ConvNeXt's channels-last layer norm
    (permute, layer_norm, permute) and layer scale (a parameter times the branch), ShuffleNet's
    channel split (chunk) and shuffle (view, transpose, view)."""
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    calls = {
        n.target if n.op == "call_method" else getattr(n.target, "__name__", "")
        for n in traced.graph.nodes
        if n.op in ("call_method", "call_function")
    }
    modules = {
        type(traced.get_submodule(n.target)).__name__
        for n in traced.graph.nodes
        if n.op == "call_module"
    }
    if node.op == "get_attr":
        if any(
            u.op == "call_function" and getattr(u.target, "__name__", "") == "mul"
            for u in node.users
        ):
            return f"layer scale (the learned per-channel scale '{node.target}')"
        return f"a parameter used outside a layer ('{node.target}')"
    if name == "permute":
        if "layer_norm" in calls or "LayerNorm" in modules:
            return "layer norm over channels (channels-last: permute, layer_norm, permute)"
        return "a permutation of axes"
    if name in SHUFFLE and {"view", "transpose"} <= calls:
        return "channel shuffle (view, transpose, view)"
    return CALLS.get(name)


def _caller(node) -> str | None:
    """The module whose forward made a function call (fx's nn_module_stack), so that the
    writer keeps a shuffle with its unit's stage."""
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack), None) or None


def _window(stride, pad, dilation) -> list[tuple]:
    args = [("kw", "stride", scalar(stride))]
    if scalar(pad) != 0:
        args.append(("kw", "padding", scalar(pad)))
    if scalar(dilation) != 1:
        args.append(("kw", "dilation", scalar(dilation)))
    return args
