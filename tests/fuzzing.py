"""Mutation fuzzing of the front end: spec text -> SpecErrors or a valid Model, never another
exception, never a hang; IR documents (also non-UTF-8 and deeply nested) -> the same; `fmt` on
specs with comments everywhere -> every comment kept, or a located refusal; and the language
server's protocol (tests/fuzzing_lsp.py). Used by tests/test_fuzz.py and runnable on its own:

    PYTHONPATH=. python tests/fuzzing.py 100000 [seed]     # writes new crashes to tests/fuzz_corpus

Mutations work on tokens (words, numbers, punctuation, white space) of the specs in specs/ so
that most mutants get past the lexer and reach the parser and the elaborator.
"""

from __future__ import annotations

import copy
import json
import random
import re
import signal
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:x[0-9]+)*|.", re.DOTALL)
# What the CI runs (tests/test_fuzz.py, tests/test_fuzz_ir.py): at least 10,000 inputs in all,
# in chunks that pytest-xdist can share out.
TEXT_CHUNKS, TEXT_PER_CHUNK = 4, 1_000  # a text mutant costs about twice an IR one
IR_CHUNKS, IR_PER_CHUNK = 6, 1_000
CHUNK_SECONDS = 120  # a guard against a general slowdown (quiet: ~10 s), not a benchmark
PER_INPUT_SECONDS = 5.0  # a hang guard; the slowest mutant takes ~1 s on a busy machine

WORDS = [
    "conv",
    "dense",
    "pool",
    "maxpool",
    "bn",
    "relu",
    "add",
    "concat",
    "multiply",
    "repeat",
    "residual",
    "parallel",
    "branch",
    "block",
    "input",
    "output",
    "if",
    "else",
    "as",
    "from",
    "shortcut",
    "compile",
    "transfer",
    "same",
    "valid",
    "stride",
    "padding",
    "in_channels",
    "class",
    "__class__",
    "import",
    "os",
    "None",
    "lambda",
    "flatten",
    "gap",
    "deconv",
    "dwconv",
    "sepconv",
    "reshape",
    "zeropad",
    "upsample",
    "model",
    "source",
    "freeze",
    "head",
    "loss",
    "optimizer",
    "true",
    "false",
    "not",
    "and",
    "or",
    "größe",
    "\u00e9t\u00e9",
    "名前",
    "x" * 300,
]
NUMBERS = [
    "0",
    "-1",
    "1",
    "2",
    "3x3",
    "0x0",
    "1x1x1",
    "10" * 15,
    str(10**30),
    "1e308",
    "1e-308",
    "99999999999",
    "3.5",
    "1/0",
    "2**8",
    "224x224x3",
    "100000",
    "-0",
    ".5",
    "1" + "0" * 400,
]
PUNCT = list("{}()=,;:#\"'\\-+*/%<>!@$&|~^`[]") + [
    "\r\n",
    "\t",
    "\r",
    "\x00",
    "\x0c",
    "\u2028",
    "\ufeff",
    "\udcff",
    "\n",
]


def specs() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").glob("*.cnn"))]


def mutate(text: str, rng: random.Random) -> str:
    """One to four random edits of the token list, or a structural transformation."""
    choice = rng.random()
    if choice < 0.08:
        return _structural(text, rng)
    tokens = TOKEN.findall(text) or [""]
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(tokens))
        op = rng.randrange(9)
        if op == 0 and len(tokens) > 1:
            del tokens[i]
        elif op == 1:
            tokens.insert(i, tokens[i])
        elif op == 2:
            j = rng.randrange(len(tokens))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif op == 3:
            tokens.insert(
                i,
                "".join(
                    chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x3000)]))
                    for _ in range(rng.randint(1, 4))
                ),
            )
        elif op == 4:
            tokens[i] = rng.choice(WORDS)
        elif op == 5:
            tokens[i] = rng.choice(NUMBERS)
        elif op == 6:
            tokens.insert(i, rng.choice(PUNCT))
        elif op == 7:
            tokens.insert(i, " ")
        else:
            j = rng.randrange(len(tokens))
            lo, hi = sorted((i, j))
            tokens[lo:lo] = tokens[lo : hi + 1][:40]  # duplicate a span
    return "".join(tokens)


def _structural(text: str, rng: random.Random) -> str:
    # Thousands of statements are legitimate and take about a second (tests/test_fuzz.py and
    # bench/compile_scaling.py time them); mutants stay small so that a hang stands out.
    n = rng.choice([10, 99, 100, 101, 1000])
    kind = rng.randrange(10)
    if kind == 0:
        return text + "\nconv " + "(" * n + "1" + ")" * n + " 3x3"
    if kind == 1:
        return text + "\n" + "repeat 1 { " * n + "relu" + " }" * n
    if kind == 2:
        blocks = "".join(f"block b{i}() {{ b{i + 1} }}\n" for i in range(n))
        return f"input 8x8x3\n{blocks}block b{n}() {{ relu }}\nb0\n"
    if kind == 3:
        return text.replace("\n", "\r\n")
    if kind == 4:
        return text.replace("  ", "\t")
    if kind == 5:
        return "".join(line for line in text.splitlines(True) if line.lstrip().startswith("#"))
    if kind == 6:
        return ""
    if kind == 7:
        return text + "\nconv " + " + ".join(["1"] * n) + " 3x3"
    if kind == 8:
        return text[: rng.randrange(len(text) + 1)]
    return text + "\n" + "\n".join(f"x{i} = relu" for i in range(n))


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 6 else 5)
    if kind == 0:
        return rng.choice([0, -1, 1, 2**63, 10**30, 3.5, float("1e308")])
    if kind == 1:
        return rng.choice(["", "conv", "input", "x" * 50, "../../etc/passwd", "\x00", "é"])
    if kind == 2:
        return rng.choice([None, True, False])
    if kind == 3:
        return []
    if kind == 4:
        return {}
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [
        "version",
        "name",
        "nodes",
        "outputs",
        "groups",
        "layer",
        "kind",
        "inputs",
        "shape",
        "trainable",
        "macs",
        "filters",
        "kernel",
        "span",
        "compile",
        "transfer",
        "totals",
    ]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def mutate_ir(document: dict, rng: random.Random) -> object:
    """A compiled IR with one or two targeted corruptions, or one value somewhere replaced by
    random JSON."""
    for _ in range(rng.randint(1, 2)):
        op = rng.randrange(8)
        nodes = document.get("nodes") if isinstance(document, dict) else None
        if op < 5 and isinstance(nodes, list) and nodes:
            node = rng.choice(nodes)
            if not isinstance(node, dict):
                continue
            if op == 0 and node:  # a required key goes missing
                del node[rng.choice(list(node))]
            elif op == 1 and isinstance(node.get("shape"), list) and node["shape"]:
                node["shape"][rng.randrange(len(node["shape"]))] = rng.choice(
                    [-1, 0, 2**63, 10**30, 1.5, "7", None]
                )
            elif op == 2:  # a dangling or self reference
                node["inputs"] = [rng.choice(["nowhere", node.get("name", "x"), "", "input"])]
            elif op == 3 and isinstance(node.get("layer"), dict):
                layer = node["layer"]
                key = rng.choice(list(layer) or ["kind"])
                layer[key] = rng.choice(
                    [-3, 0, 10**30, "same", [], {}, None, True, "é" * 3, [0, 0], [10**12, 1]]
                )
            else:  # nodes out of order or repeated
                i, j = rng.randrange(len(nodes)), rng.randrange(len(nodes))
                if rng.random() < 0.5:
                    nodes[i], nodes[j] = nodes[j], nodes[i]
                else:
                    nodes.insert(i, copy.deepcopy(nodes[j]))
        else:
            document = _replace_somewhere(document, rng)
    return document


def _replace_somewhere(document, rng: random.Random):
    path, target = [], document
    while isinstance(target, (dict, list)) and target and rng.random() < 0.8:
        key = rng.choice(list(target)) if isinstance(target, dict) else rng.randrange(len(target))
        path.append(key)
        if not isinstance(target[key], (dict, list)) or rng.random() < 0.2:
            target[key] = random_json(rng)
            return document
        target = target[key]
    return random_json(rng) if not path else document


def ir_documents() -> list[dict]:
    import cnnspec

    return [json.loads(cnnspec.compile_text(text).to_json()) for text in specs()]


def ir_inputs(count: int, seed: int = 0):
    """`count` documents for cnnspec.validate: mutated real IRs, now and then as broken JSON
    text or a random value."""
    rng = random.Random(seed)
    documents = ir_documents()
    for _ in range(count):
        roll = rng.random()
        if roll < 0.03:
            yield _unreadable(rng, rng.choice(documents))
        elif roll < 0.05:
            yield random_json(rng)
        elif roll < 0.1:
            text = json.dumps(rng.choice(documents))
            yield text[: rng.randrange(len(text))]
        else:
            yield mutate_ir(copy.deepcopy(rng.choice(documents)), rng)


def _unreadable(rng: random.Random, document: dict) -> bytes | str:
    """A document as bytes that are not UTF-8, or nested deeper than any reader recurses
    (issue 14: both were tracebacks in `cnnspec validate`)."""
    if rng.random() < 0.5:
        raw = bytearray(json.dumps(document).encode())
        for _ in range(rng.randint(1, 3)):
            raw[rng.randrange(len(raw))] = rng.choice([0xFF, 0xFE, 0xC0, 0x80, 0xED])
        return bytes(raw)
    depth = rng.choice([1_000, 10_000, 100_000])
    open_, close = rng.choice([("[", "]"), ('{"a":', "}")])
    inner = open_ * depth + "1" + close * depth
    return rng.choice([inner, json.dumps({**document, "nodes": "@"}).replace('"@"', inner)])


# --- the formatter: comments everywhere, kept word for word or refused ----------------------------


def with_comments(text: str, rng: random.Random) -> str:
    """The text with comments added at line ends, on lines of their own and before `else`."""
    out = []
    for i, line in enumerate(text.splitlines()):
        roll = rng.random()
        if roll < 0.15:
            out.append(" " * rng.randrange(4) + f"# own {i}")
        if "else" in line and rng.random() < 0.5:
            line = line.replace("else", f"# before else {i}\nelse", 1)
        if roll > 0.6 and not line.rstrip().endswith("\\"):
            line += rng.choice(["  ", " ", "\t"]) + f'# end {i} {{ }} ; " x'
        out.append(line)
    return "\n".join(out) + rng.choice(["", "\n", "\n# last"])


def _comment_words(text: str) -> list[str]:
    from cnnspec.fmt import comments_in

    return [w for c in comments_in(text) for w in str(c).split()]


def check_fmt(text: str) -> str | None:
    """None when `fmt` keeps every comment (and formatting again changes nothing) or refuses
    with a located error; otherwise what went wrong."""
    import cnnspec
    from cnnspec.fmt import format_text

    try:
        with time_limit(PER_INPUT_SECONDS):
            try:
                once = format_text(text)
            except (cnnspec.SpecError, cnnspec.SpecErrors) as err:
                errors = err.errors if isinstance(err, cnnspec.SpecErrors) else [err]
                if not all(e.code and e.span is not None for e in errors):
                    return "fmt refused without a located error"
                return None
            if _comment_words(once) != _comment_words(text):
                return "fmt lost or changed a comment"
            if format_text(once) != once:
                return "formatting twice changed the text"
            return None
    except Exception:  # noqa: BLE001  (the point: nothing else escapes)
        return traceback.format_exc(limit=6)


def fmt_campaign(count: int, seed: int = 0, save: bool = False) -> tuple[int, list, float]:
    """`count` specs and mutants with comments everywhere through `fmt`; as `campaign`."""
    rng = random.Random(seed)
    sources = specs() + [(ROOT / "tests" / "data" / "every_construct.cnn").read_text()]
    failures, slowest = [], 0.0
    for i in range(count):
        base = rng.choice(sources)
        text = with_comments(base if rng.random() < 0.5 else mutate(base, rng), rng)
        start = time.perf_counter()
        problem = check_fmt(text)
        slowest = max(slowest, time.perf_counter() - start)
        if problem:
            failures.append((text, problem))
            if save:
                CORPUS.mkdir(exist_ok=True)
                (CORPUS / f"crash_fmt_{seed}_{i}.cnn").write_text(
                    text, encoding="utf-8", errors="surrogatepass"
                )
    return count, failures, slowest


@contextmanager
def time_limit(seconds: float):
    """Turn a hang into an exception (SIGALRM; Unix, main thread)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def fire(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def check_text(text: str) -> str | None:
    """None when the compiler answers properly; otherwise what went wrong."""
    import cnnspec

    try:
        with time_limit(PER_INPUT_SECONDS):
            try:
                model = cnnspec.compile_text(text, "fuzz.cnn")
            except cnnspec.SpecErrors as errs:
                if not errs.errors or not all(e.code and e.message for e in errs.errors):
                    return "SpecErrors without a code or a message"
                errs.render(text)  # rendering must not fail on any span
                return None
            if not isinstance(model, cnnspec.Model) or not model.nodes:
                return "compile_text returned something that is not a Model"
            model.to_json()
            return None
    except Exception:  # noqa: BLE001  (the point: nothing else escapes)
        return traceback.format_exc(limit=6)


def check_ir(value) -> str | None:
    import cnnspec

    try:
        with time_limit(PER_INPUT_SECONDS):
            try:
                text = value if isinstance(value, (str, bytes)) else json.dumps(value)
                model = cnnspec.validate(text)
            except cnnspec.SpecErrors as errs:
                if not all(e.code and e.pointer is not None for e in errs.errors):
                    return "validate error without a code or a JSON pointer"
                errs.render()
                return None
            if not isinstance(model, cnnspec.Model):
                return "validate returned something that is not a Model"
            return None
    except Exception:  # noqa: BLE001
        return traceback.format_exc(limit=6)


def campaign(count: int, seed: int = 0, save: bool = False) -> tuple[int, list, float]:
    """Run `count` text mutants; return (inputs run, failures, slowest seconds)."""
    rng = random.Random(seed)
    sources = specs()
    failures, slowest = [], 0.0
    for i in range(count):
        text = mutate(rng.choice(sources), rng)
        start = time.perf_counter()
        problem = check_text(text)
        slowest = max(slowest, time.perf_counter() - start)
        if problem:
            failures.append((text, problem))
            if save:
                CORPUS.mkdir(exist_ok=True)
                (CORPUS / f"crash_{seed}_{i}.cnn").write_text(
                    text, encoding="utf-8", errors="surrogatepass"
                )
    return count, failures, slowest


def ir_campaign(count: int, seed: int = 0, save: bool = False) -> tuple[int, list, float]:
    """Run `count` IR documents through cnnspec.validate; same answer as `campaign`."""
    failures, slowest = [], 0.0
    for i, document in enumerate(ir_inputs(count, seed)):
        start = time.perf_counter()
        problem = check_ir(document)
        slowest = max(slowest, time.perf_counter() - start)
        if problem:
            failures.append((document, problem))
            if save:
                CORPUS.mkdir(exist_ok=True)
                text = document if isinstance(document, (str, bytes)) else json.dumps(document)
                data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
                (CORPUS / f"crash_ir_{seed}_{i}.json").write_bytes(data)
    return count, failures, slowest


# `make fuzz N`: N inputs in all, shared out over the classes (their cost differs: an LSP input
# is a round trip to a subprocess).
SHARES = {"spec text": 0.4, "IR documents": 0.3, "fmt with comments": 0.2, "LSP protocol": 0.1}


def main(n: int, seed: int) -> int:
    import fuzzing_lsp

    runs = {
        "spec text": lambda k: campaign(k, seed, save=True),
        "IR documents": lambda k: ir_campaign(k, seed, save=True),
        "fmt with comments": lambda k: fmt_campaign(k, seed, save=True),
        "LSP protocol": lambda k: fuzzing_lsp.campaign(k, seed),
    }
    total, failed, t0 = 0, [], time.perf_counter()
    for name, share in SHARES.items():
        start = time.perf_counter()
        ran, failures, worst = runs[name](max(int(n * share), 1))
        took = time.perf_counter() - start
        total += ran
        failed += failures
        print(
            f"{name}: {ran} inputs in {took:.1f} s ({ran / took:.0f}/s), slowest "
            f"{worst:.2f} s, {len(failures)} failures",
            flush=True,
        )
    took = time.perf_counter() - t0
    print(f"all: {total} inputs in {took:.1f} s, {len(failed)} failures")
    for text, problem in failed[:5]:
        print("-" * 60, "\n", str(text)[:300], "\n", problem)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 10_000,
            int(sys.argv[2]) if len(sys.argv) > 2 else 0,
        )
    )
