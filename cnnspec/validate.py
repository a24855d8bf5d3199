"""Validation of an IR received as data (JSON text or a dict), for tools that generate networks.

Checks the schema (pydantic), then the graph: unique names, inputs that exist and come first,
and every shape and count recomputed from the layer rules. Errors are SpecErrors whose `pointer`
is a JSON pointer into the document (`/nodes/3/shape`).
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from .compiler import collector_paused
from .errors import SpecError, SpecErrors
from .ir import Model
from .layers import ShapeError, fmt_shape


def validate(data) -> Model:
    """Return the validated Model, or raise SpecErrors listing what is wrong."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise SpecErrors([SpecError("E601", f"not JSON: {exc}", pointer="")]) from None
    try:
        with collector_paused():
            model = Model.model_validate(data)
    except ValidationError as exc:
        raise SpecErrors([
            SpecError("E602", e["msg"], pointer="/" + "/".join(str(p) for p in e["loc"]),
                      received=repr(e.get("input"))[:200] if e["type"] != "missing" else None)
            for e in exc.errors()]) from None
    errors = check_graph(model)
    if errors:
        raise SpecErrors(errors)
    return model


def check_graph(model: Model) -> list[SpecError]:
    errors: list[SpecError] = []
    seen: dict[str, tuple] = {}
    if not model.nodes or model.nodes[0].kind != "input":
        return [SpecError("E603", "the first node must be the input", pointer="/nodes/0")]
    for i, node in enumerate(model.nodes):
        where = f"/nodes/{i}"
        if node.name in seen:
            errors.append(SpecError("E604", f"duplicate node name '{node.name}'",
                                    pointer=where + "/name"))
            continue
        missing = [x for x in node.inputs if x not in seen]
        if missing:
            errors.append(SpecError("E605", f"'{node.name}' reads '{missing[0]}', which is not "
                                    "an earlier node", pointer=where + "/inputs"))
            seen[node.name] = node.shape
            continue
        if node.kind == "input" and i:
            errors.append(SpecError("E603", "only the first node is the input", pointer=where))
        layer = node.layer
        shapes = [seen[x] for x in node.inputs]
        if not layer.min_inputs <= len(shapes) <= layer.max_inputs:
            errors.append(SpecError("E605", f"'{node.name}' has {len(shapes)} inputs",
                                    pointer=where + "/inputs"))
            seen[node.name] = node.shape
            continue
        try:
            out = layer.output_shape(shapes)
            trainable, frozen = layer.count_params(shapes)
            if node.frozen:     # the transfer section froze it: all its parameters are fixed
                trainable, frozen = 0, trainable + frozen
            macs = layer.count_macs(shapes, out)
        except ShapeError as exc:
            errors.append(SpecError(exc.code, f"'{node.name}': {exc.message}", pointer=where,
                                    hint=exc.hint))
            seen[node.name] = node.shape
            continue
        for key, want, got in (("shape", tuple(out), tuple(node.shape)),
                               ("trainable", trainable, node.trainable),
                               ("non_trainable", frozen, node.non_trainable),
                               ("macs", macs, node.macs)):
            if want != got:
                shown = (fmt_shape(want), fmt_shape(got)) if key == "shape" else (want, got)
                errors.append(SpecError("E606", f"'{node.name}' {key} is {shown[1]}, but its "
                                        f"layer gives {shown[0]}", pointer=f"{where}/{key}",
                                        expected=str(shown[0]), received=str(shown[1])))
        seen[node.name] = tuple(out)
    for j, name in enumerate(model.outputs):
        if name not in seen:
            errors.append(SpecError("E605", f"output '{name}' is not a node",
                                    pointer=f"/outputs/{j}"))
    return errors
