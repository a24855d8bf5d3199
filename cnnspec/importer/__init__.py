"""`cnnspec import`: a spec written from an existing model (torchvision, keras.applications,
a saved .keras file).

    text = import_spec("torchvision:resnet50", input_shape=(64, 64, 3))

The source is read into a Graph (from_torch / from_keras), decomposed into residuals and
parallels (structure), written with blocks and repeats (writer), then put in the canonical
layout by cnnspec.fmt. The result is compiled before it is returned, and its parameter counts
must equal the source's, so a spec that says something else than the model is never written.
What the language cannot say is refused with a SpecError E41x naming the layer and its type:
    E410 unknown source   E411 a layer or argument with no cnnspec equivalent
    E413 a graph that is not series-parallel / several outputs
    E414 a torch model torch.fx cannot trace    E415 no fixed input size
    E416 the written spec does not count what the source counts (an importer bug)
    E417 a construct the language does not have yet (an unequal channel split...), named
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import SpecError, SpecErrors
from .ops import Graph

DEFAULT_INPUT = (224, 224, 3)


def read_source(source: str, input_shape=None):
    """(Graph, the framework model) for a source reference."""
    kind, _, name = source.partition(":")
    if kind == "torchvision" and name:
        from . import from_torch

        module = from_torch.load_torchvision(name)
        return from_torch.read(module, source, tuple(input_shape or DEFAULT_INPUT)), module
    if kind == "keras" and name or source.endswith((".keras", ".h5")):
        from . import from_keras

        kmodel = from_keras.load(name if kind == "keras" else source, input_shape)
        return from_keras.read(kmodel, source), kmodel
    raise SpecError(
        "E410",
        f"unknown model source '{source}'",
        hint="torchvision:NAME (e.g. torchvision:resnet50), keras:NAME "
        "(e.g. keras:ResNet50) or a saved model file PATH.keras",
    )


def import_spec(source: str, input_shape=None) -> str:
    """The spec text for `source`; checked to compile and to count what the source counts."""
    graph, _ = read_source(source, input_shape)
    return write(graph)


def write(graph: Graph) -> str:
    from ..compiler import compile_text
    from ..fmt import format_text
    from .structure import decompose
    from .writer import Writer, flat

    head = _header(graph) + [
        f"model {_model_name(graph.source)}",
        "input " + "x".join(map(str, graph.input_shape)),
        "",
    ]
    texts = []
    for runs in (True, False):  # blocks for repeated runs of ops, where they save lines
        try:
            items = decompose(graph)
        except SpecError as err:
            if err.code != "E413":
                raise
            # not series-parallel: named tensors say it, without blocks
            texts.append("\n".join(head + _wrap(f"Written flat: {err.message}.") + flat(graph)))
            break
        writer = Writer(graph)
        items = writer.stages(writer.find_blocks(items, runs=runs))
        body = writer.sequence(items)
        defs = writer.definitions(items)
        texts.append("\n".join(head + (defs + [""] if defs else []) + body) + "\n")
    text = format_text(min(texts, key=lambda t: t.count("\n")).rstrip("\n") + "\n")
    try:
        model = compile_text(text)
    except SpecErrors as errs:
        raise SpecError(
            "E416",
            f"the spec imported from {graph.source} does not compile: {errs.errors[0]}",
            hint="a bug of the importer: please report it with the source",
        ) from None
    if (model.trainable, model.non_trainable) != tuple(graph.counts):
        raise SpecError(
            "E416",
            f"the spec imported from {graph.source} counts "
            f"{model.trainable:,} + {model.non_trainable:,} parameters, the source "
            f"{graph.counts[0]:,} + {graph.counts[1]:,}",
            hint="a bug of the importer: please report it with the source",
        )
    return text


def _header(graph: Graph) -> list[str]:
    t, n = graph.counts
    lines = [
        (
            f"# Imported from {graph.source} by `cnnspec import` at input "
            f"{'x'.join(map(str, graph.input_shape))}."
        ),
        f"# {t:,} trainable + {n:,} non-trainable parameters, as the source counts them.",
    ]
    for note in graph.notes:
        lines += _wrap(f"Note: {note}")
    return lines


def _wrap(text: str, width: int = 96) -> list[str]:
    out, line = [], "#"
    for word in text.split():
        if len(line) + 1 + len(word) > width:
            out.append(line)
            line = "#"
        line += " " + word
    return out + [line]


def _model_name(source: str) -> str:
    name = Path(source.rpartition(":")[2]).stem
    name = re.sub(r"[^A-Za-z0-9_]", "_", name).lower()
    return name if name[:1].isalpha() else f"m_{name}"
