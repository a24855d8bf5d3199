"""A Hypothesis strategy for random, mostly valid networks written as spec text.

The generator tracks the shape of the current tensor (HWC, or N for a vector) with its own
arithmetic (the frameworks' output-size formulas, written out here rather than taken from the
compiler) and picks only layers that fit it, so most examples compile; a few window layers are
drawn without the fit check, and one network in 15 gets a statement that does not fit
(MISFITS), so that the compiler's refusals are exercised too. It covers every
layer kind and their argument forms, sequential stacks, parallel branches (concat / add /
multiply), residuals with an identity, an automatic and a written shortcut, blocks with
parameters called with positional and keyword arguments, repeat (with and without `as i`),
named tensors with merges and `from=`, and now and then several outputs.

    networks()  ->  strategy of spec text
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import strategies as st

from cnnspec.layers.base import ACTIVATION_ALIASES
from cnnspec.layers.base import ACTIVATIONS as BASE_ACTIVATIONS

# every activation word the language accepts but `linear` (the identity: nothing to test)
ACTIVATIONS = (*(a for a in BASE_ACTIVATIONS if a != "linear"), *ACTIVATION_ALIASES)
MAX_SIDE = 40  # keep feature maps small: each example must run in well under a second
MAX_CH = 8


@dataclass
class State:
    shape: tuple
    blocks: dict = field(default_factory=dict)  # template index -> definition text
    count: int = 0

    def name(self, stem: str = "t") -> str:
        self.count += 1
        return f"{stem}{self.count}"


# --- Output sizes, as the frameworks define them ------------------------------------------


def window(size: int, k: int, s: int, pad, d: int = 1, ceil: bool = False) -> int:
    """Conv / pool output size: 'same' is ceil(W/S) (TensorFlow); otherwise
    floor((W + 2P - D(K-1) - 1) / S) + 1, or ceil for ceil-mode pooling with torch's rule
    that the last window must start inside the input or its left padding."""
    if pad == "same":
        return -(-size // s)
    p = 0 if pad == "valid" else pad
    span = size + 2 * p - d * (k - 1) - 1
    if span < 0:
        return 0
    if not ceil:
        return span // s + 1
    out = -(-span // s) + 1
    if (out - 1) * s >= size + p:
        out -= 1
    return out


def deconv_size(size: int, k: int, s: int, pad, op: int) -> int:
    """out = (W - 1)S - 2P + K + output_padding; 'same' gives W*S."""
    if pad == "same":
        return size * s
    p = 0 if pad == "valid" else pad
    return (size - 1) * s - 2 * p + k + op


def _fits(h: int, w: int) -> bool:
    return 1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE


# --- Single layers on a feature map -----------------------------------------------------------

# Hypothesis draws the first of a sampled_from and the bounds of an integer range more often
# than the rest (they are what examples shrink to), so lists put the rarer choice first.


def _act(draw, p_none: int = 2) -> str:
    """An inline activation word, or none (p_none in 3: none)."""
    if draw(st.integers(0, 2)) < p_none:
        return ""
    return " " + draw(st.sampled_from(ACTIVATIONS))


def _kernel(draw) -> tuple[int, int, str]:
    kh = draw(st.integers(1, 3))
    kw = draw(st.sampled_from([kh, kh, 1, 2, 3]))
    return kh, kw, f"{kh}x{kw}"


def _padding(draw, kmin: int, allow_same: bool = True) -> tuple[object, str]:
    form = draw(st.sampled_from(["same", "valid", "int"] if allow_same else ["valid", "int"]))
    if form == "same":
        return "same", " same"
    if form == "valid":
        return "valid", draw(st.sampled_from(["", " valid"]))
    p = draw(st.sampled_from([*range(1, kmin // 2 + 2), 0]))  # 0 last: drawn least
    return p, f" padding={p}"


def _window(draw, shape) -> tuple[tuple[int, int], str]:
    """Kernel, stride, dilation and padding of a sliding window (conv, dwconv, sepconv): the
    output's height and width, and the spec text from the kernel on (`3x3 stride=2 same`)."""
    h, w = shape[:2]
    kh, kw, ktext = _kernel(draw)
    s = draw(st.sampled_from([1, 1, 2]))
    d = 1 if s > 1 else draw(st.sampled_from([2, 1, 1]))
    pad, ptext = _padding(draw, min(kh, kw))
    text = ktext + (f" stride={s}" if s > 1 else "") + ptext + (f" dilation={d}" if d > 1 else "")
    return (window(h, kh, s, pad, d), window(w, kw, s, pad, d)), text


def conv(draw, shape, checked=True):
    c = shape[2]
    f = draw(st.integers(1, MAX_CH))
    hw, window_text = _window(draw, shape)
    g = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0 and f % g == 0]))
    if checked and not _fits(*hw):
        return None
    text = f"conv {f} {window_text}" + (f" groups={g}" if g > 1 else "")
    text += draw(st.sampled_from(["", "", " nobias", " bias=false"]))
    return text + _act(draw), (*hw, f)


def dwconv(draw, shape, checked=True):
    c = shape[2]
    m = draw(st.sampled_from([2, 1, 1]))
    hw, window_text = _window(draw, shape)
    if checked and (not _fits(*hw) or c * m > 2 * MAX_CH):
        return None
    text = f"dwconv {window_text}" + (f" multiplier={m}" if m > 1 else "")
    text += draw(st.sampled_from(["", " nobias"]))
    return text + _act(draw), (*hw, c * m)


def sepconv(draw, shape, checked=True):
    f = draw(st.integers(1, MAX_CH))
    m = draw(st.sampled_from([2, 1, 1]))
    hw, window_text = _window(draw, shape)
    if checked and not _fits(*hw):
        return None
    text = f"sepconv {f} {window_text}" + (f" multiplier={m}" if m > 1 else "")
    text += draw(st.sampled_from(["", " nobias"]))
    return text + _act(draw), (*hw, f)


def deconv(draw, shape, checked=True):
    h, w, _ = shape
    f = draw(st.integers(1, MAX_CH))
    kh, kw, ktext = _kernel(draw)
    s = draw(st.sampled_from([1, 2, 2, 3]))
    form = draw(st.sampled_from(["same", "valid", "int"]))
    pad, ptext = ("same", " same") if form == "same" else _padding(draw, min(kh, kw), False)
    op = 0 if pad == "same" else draw(st.sampled_from(range(s - 1, -1, -1)))
    out = (deconv_size(h, kh, s, pad, op), deconv_size(w, kw, s, pad, op), f)
    if checked and not _fits(*out[:2]):
        return None
    text = f"deconv {f} {ktext}" + (f" stride={s}" if s > 1 else "") + ptext
    text += (f" output_padding={op}" if op else "") + draw(st.sampled_from(["", " nobias"]))
    return text + _act(draw), out


def pool(draw, shape, checked=True):
    h, w, c = shape
    op = draw(st.sampled_from(["maxpool", "avgpool"]))
    k = draw(st.sampled_from([3, 2, 1]))
    s = draw(st.sampled_from([None, 1, 2]))
    stride = s or k
    pad, ptext = _padding(draw, k)
    if pad != "same" and pad != "valid" and pad > k // 2:
        pad, ptext = k // 2, f" padding={k // 2}"
    ceil = pad != "same" and draw(st.booleans())
    out = (window(h, k, stride, pad, 1, ceil), window(w, k, stride, pad, 1, ceil), c)
    if checked and not _fits(*out[:2]):
        return None
    text = f"{op} {k}" + (f" stride={s}" if s else "") + ptext + (" ceil=true" if ceil else "")
    return text, out


def global_pool(draw, shape, checked=True):
    kind = draw(st.sampled_from(["gap", "gmp"]))
    if draw(st.booleans()):
        return f"{kind} keepdims", (1, 1, shape[-1])
    return kind, (shape[-1],)


def bn(draw, shape, checked=True):
    extra = draw(
        st.lists(
            st.sampled_from(
                ["eps=1e-3", "momentum=0.99", "noscale", "nocenter", "center=false", "eps=0.01"]
            ),
            max_size=2,
            unique_by=lambda a: a.split("=")[0][:2],
        )
    )
    return " ".join(["bn", *extra]), shape


def lrn(draw, shape, checked=True):
    size = draw(st.integers(1, 5))
    extra = draw(st.sampled_from(["", " alpha=0.001", " beta=0.5 k=2"]))
    return f"lrn {size}{extra}", shape


def layernorm(draw, shape, checked=True):
    if shape[-1] == 1:
        # over one channel x - mean is float32 rounding noise that the two frameworks round
        # differently (2.6e-4 relative was seen): a degenerate case, not a parity question
        return "identity", shape
    extra = draw(st.sampled_from(["", " eps=1e-6", " noscale", " nocenter"]))
    return f"layernorm{extra}", shape


def groupnorm(draw, shape, checked=True):
    c = shape[-1]
    g = draw(st.sampled_from([d for d in range(1, c + 1) if c % d == 0]))
    return f"groupnorm {g}" + draw(st.sampled_from(["", " eps=1e-6"])), shape


def layerscale(draw, shape, checked=True):
    return "layerscale " + draw(st.sampled_from(["0.5", "1e-6", "2"])), shape


def normalize(draw, shape, checked=True):
    return draw(st.sampled_from(["normalize", "normalize mean=0.5 variance=4"])), shape


def stochastic_depth(draw, shape, checked=True):
    return "stochastic_depth " + draw(st.sampled_from(["0.1", "0.5", "0"])), shape


def channel_shuffle(draw, shape, checked=True):
    c = shape[-1]
    groups = [d for d in range(2, c + 1) if c % d == 0]
    if not groups:
        return None
    return f"shuffle {draw(st.sampled_from(groups))}", shape


def split(draw, shape, checked=True):
    c = shape[-1]
    parts = draw(st.sampled_from([d for d in range(1, c + 1) if c % d == 0]))
    index = draw(st.integers(0, parts - 1))
    return f"split {parts} {index}", (*shape[:-1], c // parts)


def activation(draw, shape, checked=True):
    word = draw(st.sampled_from(ACTIVATIONS))
    if word in ("leaky_relu", "elu") and draw(st.booleans()):
        word += " " + draw(st.sampled_from(["0.2", "0.5"]))
    return word, shape


def dropout(draw, shape, checked=True):
    return "dropout " + draw(st.sampled_from(["0.1", "0.5", "0"])), shape


def zeropad(draw, shape, checked=True):
    h, w, c = shape
    form = draw(st.integers(0, 2))
    if form == 0:
        p = draw(st.integers(0, 2))
        return f"zeropad {p}", (h + 2 * p, w + 2 * p, c)
    if form == 1:
        v, hz = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        return f"zeropad ({v}, {hz})", (h + 2 * v, w + 2 * hz, c)
    t, b, l, r = (draw(st.integers(0, 2)) for _ in range(4))
    return f"zeropad ({t}, {b}, {l}, {r})", (h + t + b, w + l + r, c)


def crop(draw, shape, checked=True):
    h, w, c = shape
    t, b = (draw(st.integers(0, (h - 1) // 2)) for _ in range(2))
    left, r = (draw(st.integers(0, (w - 1) // 2)) for _ in range(2))
    return f"crop ({t}, {b}, {left}, {r})", (h - t - b, w - left - r, c)


def upsample(draw, shape, checked=True):
    h, w, c = shape
    fh = draw(st.integers(1, 2))
    fw = draw(st.sampled_from([fh, fh, 1, 2, 3]))
    out = (h * fh, w * fw, c)
    if checked and not _fits(*out[:2]):
        return None
    factor = str(fh) if fh == fw else f"{fh}x{fw}"
    mode = draw(st.sampled_from(["", " nearest", " bilinear"]))
    return f"upsample {factor}{mode}", out


def rescale(draw, shape, checked=True):
    return draw(
        st.sampled_from(
            ["rescale 0.5 0.1", "rescale 2", "rescale 0.0039 -1", "rescale scale=3 offset=0.5"]
        )
    ), shape


def identity(draw, shape, checked=True):
    return "identity", shape


def flatten(draw, shape, checked=True):
    return "flatten", (math.prod(shape),)


def reshape(draw, shape, checked=True):
    h, w, c = shape
    n = h * w * c
    options = [
        (f"reshape {n}", (n,)),
        (f"reshape {w}x{h}x{c}", (w, h, c)),
        (f"reshape (1, {h * w}, -1)", (1, h * w, c)),
    ]
    return draw(st.sampled_from(options))


# --- Single layers on a vector ----------------------------------------------------------------


def dense(draw, shape, checked=True):
    u = draw(st.integers(1, 12))
    return f"dense {u}" + draw(st.sampled_from(["", " nobias"])) + _act(draw), (u,)


def reshape_flat(draw, shape, checked=True):
    (n,) = shape
    divisors = [d for d in range(1, n + 1) if n % d == 0 and n // d <= MAX_SIDE]
    c = draw(st.sampled_from([d for d in divisors if d <= MAX_CH] or [1]))
    if (n // c) > MAX_SIDE * MAX_SIDE:
        return None
    rest = n // c
    hs = [
        d for d in range(1, rest + 1) if rest % d == 0 and d <= MAX_SIDE and rest // d <= MAX_SIDE
    ]
    if not hs:
        return None
    h = draw(st.sampled_from(hs))
    return f"reshape {h}x{rest // h}x{c}", (h, rest // h, c)


MAP_LAYERS = [
    conv,
    conv,
    dwconv,
    sepconv,
    deconv,
    pool,
    pool,
    global_pool,
    bn,
    lrn,
    activation,
    dropout,
    zeropad,
    crop,
    upsample,
    rescale,
    identity,
    flatten,
    reshape,
    layernorm,
    groupnorm,
    layerscale,
    normalize,
    stochastic_depth,
    channel_shuffle,
    split,
    # no adaptive_pool: Keras 3's adaptive layers stop the process (SIGFPE) at sizes
    # Keras' emitter refuses (E422, keras_adaptive_safe), and one crash would take a whole
    # test worker down; its parity is tested size by size in tests/test_constructs.py.
    # detect is left out of random networks: its output is a table of predictions (priors x
    # columns), not a map or vector that further layers take; tests/test_detection_head.py
    # and the detection zoo test it.
]
VEC_LAYERS = [
    dense,
    dense,
    dense,
    activation,
    dropout,
    bn,
    rescale,
    identity,
    reshape_flat,
    layernorm,
    normalize,
    stochastic_depth,
]
# Layers that keep a feature map's shape, with the channels they need: bodies of residuals,
# repeats and add/multiply branches.
KEEP_MAP = [
    bn,
    lrn,
    activation,
    dropout,
    rescale,
    identity,
    layernorm,
    groupnorm,
    layerscale,
    stochastic_depth,
]


def layer(draw, state: State):
    """One layer that fits the current shape (now and then one unchecked, which the compiler
    may refuse)."""
    table = MAP_LAYERS if len(state.shape) == 3 else VEC_LAYERS
    checked = draw(st.integers(0, 24)) != 12
    for _ in range(3):
        made = draw(st.sampled_from(table))(draw, state.shape, checked)
        if made is not None:
            return made
    return bn(draw, state.shape)


def keep(draw, shape, depth: int) -> list[str]:
    """A short stack that ends at the shape it starts from (a residual body, an add branch)."""
    lines = []
    for _ in range(draw(st.integers(0 if depth else 1, 3))):
        pick = draw(st.integers(0, 5))
        if len(shape) == 1:
            lines.append(
                f"dense {shape[0]}"
                if pick < 3
                else draw(st.sampled_from([bn, activation, dropout, rescale]))(draw, shape)[0]
            )
            continue
        c = shape[2]
        if pick == 0:
            _, _, ktext = _kernel(draw)
            g = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
            lines.append(f"conv {c} {ktext} same" + (f" groups={g}" if g > 1 else "") + _act(draw))
        elif pick == 1:
            lines.append(f"dwconv 3x3 same{_act(draw)}")
        elif pick == 2:
            lines.append(f"sepconv {c} 3x3 same dilation=2{_act(draw)}")
        elif pick == 3:
            lines.append(
                draw(
                    st.sampled_from(
                        [
                            "maxpool 3 stride=1 same",
                            "avgpool 2 stride=1 same",
                            "maxpool 3 stride=1 padding=1",
                        ]
                    )
                )
            )
        else:
            lines.append(draw(st.sampled_from(KEEP_MAP))(draw, shape)[0])
    return lines


# --- Structures -------------------------------------------------------------------------------


def residual(draw, state: State, depth: int):
    shape = state.shape
    act = draw(st.sampled_from(["", " relu", " gelu"]))
    form = draw(
        st.sampled_from(["identity", "auto", "shortcut"] if len(shape) == 3 else ["identity"])
    )
    if form == "identity":
        body = keep(draw, shape, depth)
        return [f"residual{act} {{", *_indent(body), "}"], shape
    h, w, _ = shape
    f = draw(st.integers(1, MAX_CH))
    s = draw(st.sampled_from([1, 2]))
    out = (-(-h // s), -(-w // s), f)
    body = [f"conv {f} 3x3 stride={s} same nobias", "bn", *keep(draw, out, depth)]
    if form == "auto" and h % s == 0 and w % s == 0:  # the compiler infers the stride
        return [f"residual{act} shortcut=auto {{", *_indent(body), "}"], out
    short = draw(
        st.sampled_from(
            [
                [f"conv {f} 1x1 stride={s}", "bn"],
                [f"conv {f} 1x1 stride={s} nobias"],
                [f"avgpool {s} stride={s} same", f"conv {f} 1x1"],
            ]
        )
    )
    return ([f"residual{act} {{", *_indent(body), "} shortcut {", *_indent(short), "}"], out)


def parallel(draw, state: State, depth: int):
    h, w, c = state.shape
    op = draw(st.sampled_from(["concat", "concat", "add", "multiply"]))
    act = draw(st.sampled_from(["", " relu"]))
    s = draw(st.sampled_from([1, 1, 2]))
    hs, ws = -(-h // s), -(-w // s)
    branches, channels = [], []
    for _ in range(draw(st.integers(2, 3))):
        f = c if op != "concat" else draw(st.integers(1, MAX_CH))
        first = draw(
            st.sampled_from(
                [f"conv {f} {k}x{k} stride={s} same" for k in (1, 3)]
                + [f"maxpool 3 stride={s} same"] * (f == c)
                + ["EMPTY"] * (s == 1 and f == c)
            )
        )
        if first == "EMPTY":
            body, f = [], c
        else:
            f = c if first.startswith("maxpool") else f
            body = [first, *keep(draw, (hs, ws, f), depth)]
        label = draw(st.sampled_from(["", " " + state.name("b")]))
        branches += [f"branch{label} {{", *_indent(body), "}"]
        channels.append(f)
    out = (hs, ws, sum(channels) if op == "concat" else c)
    return [f"parallel {op}{act} {{", *_indent(branches), "}"], out


# Block templates: definition (with NAME), a call maker and the shape it gives.
def _block_conv(draw, shape):
    h, w, _ = shape
    f, s = draw(st.integers(1, MAX_CH)), draw(st.sampled_from([1, 2]))
    call = draw(
        st.sampled_from(
            [f"NAME {f}" + (f" s={s}" if s > 1 else ""), f"NAME {f} {s}", f"NAME f={f} s={s}"]
        )
    )
    return call, (-(-h // s), -(-w // s), f)


def _block_widen(draw, shape):
    h, w, c = shape
    m = 1 if c > MAX_CH else draw(st.sampled_from([1, 2]))
    call = draw(st.sampled_from([f"NAME {m}", f"NAME m={m}"] + ["NAME"] * (m == 2)))
    return call, (h, w, c * m)


def _block_repeat(draw, shape):
    h, w, _ = shape
    f, n = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    return f"NAME {f} n={n}", (h, w, f + n - 1)


BLOCKS = [
    ("block NAME(f, s=1) {\n  conv f 3x3 stride=s same nobias; bn; relu\n}", _block_conv),
    (
        (
            "block NAME(m=2) {\n  residual relu { conv in_channels 3x3 same; bn }\n"
            "  if m > 1 { conv in_channels*m 1x1 } else { identity }\n}"
        ),
        _block_widen,
    ),
    ("block NAME(f, n=1) {\n  repeat n as i { conv f + i 1x1 same }\n}", _block_repeat),
]


def block_call(draw, state: State, depth: int):
    index = draw(st.integers(0, len(BLOCKS) - 1))
    definition, make = BLOCKS[index]
    name = f"blk{index}"
    state.blocks[index] = definition.replace("NAME", name)
    call, out = make(draw, state.shape)
    return [call.replace("NAME", name)], out


def repeat(draw, state: State, depth: int):
    n = draw(st.integers(0, 3))
    if len(state.shape) == 3 and draw(st.booleans()):
        h, w, _ = state.shape
        f = draw(st.integers(1, 5))
        body = [f"conv {f} + i 3x3 same"]
        out = (h, w, f + n - 1) if n else state.shape
        return [f"repeat {n} as i {{", *_indent(body), "}"], out
    return [f"repeat {n} {{", *_indent(keep(draw, state.shape, depth)), "}"], state.shape


def merge(draw, state: State, depth: int):
    """Name the current tensor, grow a short stack, merge the two: add / multiply for equal
    shapes, concat along the channels; or squeeze-and-excite (a broadcast multiply)."""
    shape = state.shape
    skip = state.name("skip")
    form = draw(st.sampled_from(["from", "se", "concat", "multiply", "add"]))
    if len(shape) == 1:
        form = "add" if form in ("se", "from") else form
    lines = [f"{skip} = identity"]
    if form == "se":
        c = shape[2]
        return lines + ["gap keepdims", f"conv {c} 1x1 sigmoid", f"multiply {skip}"], shape
    if form == "from":
        f = draw(st.integers(1, MAX_CH))
        other = keep(draw, shape, depth)
        return lines + other + [f"conv {f} 1x1 from={skip}"], (*shape[:2], f)
    if form == "concat" and len(shape) == 3:
        f = draw(st.integers(1, MAX_CH))
        return lines + [
            f"conv {f} 3x3 same",
            *keep(draw, (*shape[:2], f), depth),
            f"concat {skip}",
        ], (*shape[:2], f + shape[2])
    if form == "concat":
        u = draw(st.integers(1, 8))
        return lines + [f"dense {u}", f"concat {skip}"], (u + shape[0],)
    return lines + keep(draw, shape, depth) + [f"{form} {skip}"], shape


STRUCTURES = [residual, parallel, block_call, repeat, merge]


def statement(draw, state: State, depth: int) -> list[str]:
    use_structure = depth < 2 and draw(st.integers(0, 3)) == 0
    if use_structure:
        options = STRUCTURES if len(state.shape) == 3 else [residual, merge, repeat]
        lines, out = draw(st.sampled_from(options))(draw, state, depth + 1)
    else:
        text, out = layer(draw, state)
        lines = [text]
    state.shape = out
    return lines


def _indent(lines: list[str]) -> list[str]:
    return ["  " + line for line in lines]


# Statements that do not fit (most shapes): the compiler must refuse them with SpecErrors.
MISFITS = [
    "conv 4 99x99",
    "reshape 7x7x7",
    "conv 3 3x3 from=nowhere",
    "maxpool 3 padding=5",
    "conv 6 3x3 groups=4",
    "dense 4\nconv 2 3x3",
    "add input",
    "zeropad (1, 2, 3)",
    "upsample 0",
    "dropout 1.5",
    "deconv 2 3x3 stride=2 output_padding=3",
    "concat nowhere",
    "repeat -1 { relu }",
    "bn eps=0",
]


def preprocess(draw, channels: int) -> str:
    """The input line's preprocessing (kind `preprocess`): one value, or one per channel.
    Scales keep the inputs (of order 1 in the parity tests) of order 1: scale=1/255 would
    shrink their spread to ~0.004, and a norm layer after it would compare float32 rounding."""
    std = [draw(st.sampled_from([0.5, 1.0, 2.0])) for _ in range(channels)]
    per_channel = ", ".join(map(str, std)) if channels > 1 else str(std[0])
    std_text = f"({per_channel})" if channels > 1 else per_channel
    return f"scale={draw(st.sampled_from(['2', '0.5', '1']))} mean=0.5 std={std_text}"


@st.composite
def networks(draw) -> str:
    if draw(st.integers(0, 9)) == 0:
        n = draw(st.integers(2, 16))
        head, shape = f"input {n}", (n,)
    else:
        h, w, c = draw(st.integers(8, 24)), draw(st.integers(8, 24)), draw(st.integers(1, 8))
        head, shape = f"input {h}x{w}x{c}", (h, w, c)
    state = State(shape)
    body, outputs = [], []
    for _ in range(draw(st.integers(2, 10))):
        lines = statement(draw, state, 0)
        if len(lines) == 1 and draw(st.integers(0, 5)) == 0:
            name = state.name("out")  # a named tensor kept as an extra output
            lines = [f"{name} = {lines[0]}"]
            outputs.append(name)
        body += lines
    if draw(st.integers(0, 14)) == 7:  # not an end: Hypothesis favours the bounds
        body.append(draw(st.sampled_from(MISFITS)))
    if draw(st.booleans()):
        tail = ["gap", f"dense {draw(st.integers(1, 10))}"] if len(state.shape) == 3 else []
        tail.append(draw(st.sampled_from(["", "softmax", "sigmoid"])) or "identity")
        body += tail
    text = ["model net", head, *state.blocks.values(), *body]
    if outputs:
        text += ["final = identity", "output " + ", ".join([*outputs, "final"])]
    return "\n".join(text) + "\n"


# What the generated texts should cover between them (a pattern per feature, on the text):
# tests/test_property_parity.py checks that every one turns up among its examples.
FEATURES = {
    "conv stride": r"^\s*conv .*stride=2",
    "conv dilation": r"^\s*conv .*dilation=2",
    "conv groups": r"^\s*conv .*groups=",
    "conv int padding": r"^\s*conv .*padding=\d",
    "conv same": r"^\s*conv .* same",
    "conv nobias": r"^\s*conv .*(nobias|bias=false)",
    "dwconv": r"dwconv ",
    "dwconv multiplier": r"dwconv .*multiplier=2",
    "sepconv": r"sepconv ",
    "sepconv multiplier": r"sepconv .*multiplier=2",
    "deconv same": r"deconv .* same",
    "deconv int padding": r"deconv .*padding=",
    "deconv output_padding": r"output_padding",
    "maxpool same": r"maxpool .*same",
    "avgpool same": r"avgpool .*same",
    "maxpool int padding": r"maxpool .*padding=[1-9]",
    "avgpool int padding": r"avgpool .*padding=[1-9]",
    "avgpool ceil": r"avgpool .*ceil",
    "maxpool ceil": r"maxpool .*ceil",
    "gap": r"(^|= )gap",
    "gmp": r"gmp",
    "keepdims": r"keepdims",
    "bn eps": r"bn .*eps",
    "bn no scale": r"bn .*(noscale|scale=f)",
    "bn no center": r"nocenter",
    "bn momentum": r"momentum",
    "lrn": r"lrn \d",
    "dropout": r"dropout",
    "flatten": r"flatten",
    "dense": r"dense",
    "reshape": r"reshape",
    "zeropad": r"zeropad",
    "crop": r"crop \(",
    "upsample": r"upsample",
    "upsample bilinear": r"bilinear",
    "rescale": r"rescale",
    "identity": r"identity",
    "add": r"^\s*add ",
    "layernorm": r"layernorm",
    "groupnorm": r"groupnorm",
    "layerscale": r"layerscale",
    "normalize": r"normalize",
    "stochastic_depth": r"stochastic_depth",
    "shuffle": r"shuffle \d",
    "split": r"split \d",
    "adaptive pool": r"adaptive_\w+pool",
    "concat": r"^\s*concat ",
    "multiply": r"^\s*multiply ",
    "residual identity": r"residual( \w+)? \{",
    "residual auto": r"shortcut=auto",
    "residual shortcut": r"\} shortcut \{",
    "parallel concat": r"parallel concat",
    "parallel add": r"parallel add",
    "parallel multiply": r"parallel multiply",
    "block": r"^block",
    "repeat": r"repeat \d \{",
    "repeat as": r"repeat \d as i",
    "from=": r"from=",
    "several outputs": r"^output .*,",
    "vector input": r"^input \d+$",
    **{f"activation {a}": rf"(^|\s){a}(\s|$)" for a in ACTIVATIONS},
}


@st.composite
def preprocessed_networks(draw) -> str:
    """networks() with preprocessing on the input line where the input is an image (a strategy
    of its own: a draw inside networks() shifts its derandomized stream of examples)."""
    lines = draw(networks()).split("\n")
    dims = lines[1].split()[1]
    if "x" in dims:
        lines[1] += " " + preprocess(draw, int(dims.split("x")[-1]))
    return "\n".join(lines)
