"""The intermediate representation: a validated graph with every shape and count resolved.

This is the contract with backends and with tools that embed cnnspec. It round-trips through
JSON (`Model.model_validate_json(m.model_dump_json()) == m`) and has a JSON Schema. Totals are
derived from the nodes, never stored separately, so an IR cannot disagree with itself.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .layers import REGISTRY

IR_VERSION = 1

# Union[...] of a runtime tuple: the PEP 604 spelling cannot be built from a sequence.
LayerSpec = Annotated[Union[tuple(REGISTRY.values())], Field(discriminator="kind")]  # type: ignore  # noqa: UP007


class Span(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None


class Node(BaseModel):
    """One layer instance: its arguments, inputs, output shape and counts."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    name: str = Field(description="dotted path, unique: blocks and branches become prefixes")
    layer: LayerSpec
    inputs: list[str] = Field(default_factory=list, description="names of the nodes it reads")
    shape: tuple[int, ...] = Field(description="output shape without the batch: (H, W, C) or (N,)")
    trainable: int = Field(0, ge=0, description="trainable parameters")
    non_trainable: int = Field(0, ge=0, description="non-trainable parameters (BN statistics)")
    macs: int = Field(0, ge=0, description="multiply-accumulates per sample (conv and dense)")
    frozen: bool = Field(
        False,
        description="frozen by the transfer section: its trainable "
        "parameters are counted as non-trainable",
    )
    span: Span | None = None

    @property
    def kind(self) -> str:
        return self.layer.kind

    @property
    def params(self) -> int:
        return self.trainable + self.non_trainable


class Group(BaseModel):
    """A named region of the graph: a block instance, a residual, a branch or a shortcut."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    path: str
    kind: Literal["block", "residual", "parallel", "branch", "shortcut"]
    block: str | None = Field(None, description="the block definition, for kind 'block'")
    members: list[str] = Field(default_factory=list, description="the nodes inside, in order")
    span: Span | None = None


class Optimizer(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    rho: float = Field(0.9, ge=0, lt=1)
    eps: float | None = Field(None, gt=0)


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    name: Literal["constant", "step", "exponential", "cosine", "plateau"] = "constant"
    step_size: int | None = Field(None, ge=1, description="step: epochs between decays")
    gamma: float | None = Field(None, gt=0, description="step/exponential/plateau decay factor")
    patience: int | None = Field(None, ge=0, description="plateau: epochs without improvement")
    min_lr: float = Field(0.0, ge=0)
    warmup: int = Field(0, ge=0, description="epochs of linear warm-up before the schedule")


class EarlyStopping(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    monitor: str = "val_loss"
    patience: int = Field(5, ge=0)
    min_delta: float = Field(0.0, ge=0)
    restore_best: bool = True


class CompileSpec(BaseModel):
    """The `compile` section: how to train the network."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    loss: list[str] = Field(default_factory=list, description="one loss per output, or one")
    loss_weights: list[float] = Field(default_factory=list)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    metrics: list[str] = Field(default_factory=list)
    schedule: Schedule = Field(default_factory=Schedule)
    early_stopping: EarlyStopping | None = None
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    validation_split: float = Field(0.1, ge=0, lt=1)
    seed: int = 0
    mixed_precision: bool = False
    augment: list[str] = Field(default_factory=list)
    resize: Literal["stretch", "letterbox"] = Field(
        "stretch", description="how image files of other shapes reach the input"
    )
    span: Span | None = None


class Freeze(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    mode: Literal["none", "all", "first", "until", "pattern"] = "none"
    count: int | None = Field(None, ge=0, description="'first': how many layers")
    layer: str | None = Field(None, description="'until': the last frozen layer, inclusive")
    pattern: str | None = Field(None, description="'pattern': glob over dotted names")
    bn_inference: bool = Field(True, description="frozen batch norm keeps its statistics")
    unfreeze_at: int | None = Field(None, ge=1, description="epoch at which all unfreeze")
    backbone_lr: float | None = Field(None, gt=0, description="lr for the pretrained part")


class TransferSpec(BaseModel):
    """The `transfer` section: where weights come from, what is frozen, the new head."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    source: str
    strict: bool = True
    freeze: Freeze = Field(default_factory=Freeze)
    head_at: str | None = Field(None, description="the head replaces what follows this node")
    head: list[str] = Field(default_factory=list, description="names of the head's nodes")
    span: Span | None = None
    source_span: Span | None = Field(None, description="where the source is named")
    freeze_span: Span | None = Field(None, description="where the freeze strategy is set")


class Model(BaseModel):
    """A whole network: nodes in topological order, the first being the input."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    version: Literal[1] = IR_VERSION
    name: str = "model"
    nodes: list[Node]
    outputs: list[str]
    groups: list[Group] = Field(default_factory=list)
    compile: CompileSpec | None = None
    transfer: TransferSpec | None = None
    source: str | None = Field(None, description="the spec file this came from")
    scale: str | None = Field(
        None, description="the named scale it was compiled at (the spec's scales section), if any"
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_derived(cls, data: Any) -> Any:
        # `totals` is written for readers of `cnnspec ir`; it is derived, so never read back.
        if isinstance(data, dict) and "totals" in data:
            data = {k: v for k, v in data.items() if k != "totals"}
        return data

    # --- derived views ----------------------------------------------------------------------
    def node(self, name: str) -> Node:
        return self._index()[name]

    def _index(self) -> dict[str, Node]:
        cache = self.__dict__.get("_node_index")
        if cache is None or len(cache) != len(self.nodes):
            cache = {n.name: n for n in self.nodes}
            self.__dict__["_node_index"] = cache
        return cache

    @property
    def input(self) -> Node:
        return self.nodes[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.nodes[0].shape

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        return [self.node(o).shape for o in self.outputs]

    def live(self) -> set[str]:
        """The nodes an output depends on (the outputs and all their ancestors)."""
        live, todo = set(), list(self.outputs)
        while todo:
            name = todo.pop()
            if name not in live:
                live.add(name)
                todo.extend(self.node(name).inputs)
        return live

    @property
    def trainable(self) -> int:
        return sum(n.trainable for n in self.nodes)

    @property
    def non_trainable(self) -> int:
        return sum(n.non_trainable for n in self.nodes)

    @property
    def params(self) -> int:
        return self.trainable + self.non_trainable

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    def totals(self) -> dict:
        return {
            "total_params": self.params,
            "trainable_params": self.trainable,
            "non_trainable_params": self.non_trainable,
            "macs": self.macs,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The IR as JSON, with the derived `totals` appended for readers (ignored on load).
        pydantic's serialiser writes the body: Python's json module indents in pure Python,
        ten times slower on a large network."""
        import json

        body = self.model_dump_json(indent=indent)
        if not indent:
            return body[:-1] + ',"totals":' + json.dumps(self.totals(), separators=(",", ":")) + "}"
        pad = " " * indent
        totals = json.dumps(self.totals(), indent=indent).replace("\n", "\n" + pad)
        return f'{body[:-2]},\n{pad}"totals": {totals}\n}}'


def json_schema() -> dict:
    schema = Model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cnnspec IR"
    return schema
