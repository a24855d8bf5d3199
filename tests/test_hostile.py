"""Hostile specs, front end: a spec is untrusted input. Names that could break out of generated
code are refused where they stand; strings are data, never run; recursion and enormous
expansions are refused quickly; a memory budget refuses with the size while `summary` still
describes the network."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cnnspec
from cnnspec import SpecErrors

I = "input 8x8x3\n"
HANG_GUARD_SECONDS = 5.0  # the refusals take milliseconds; this only catches a hang

# (source, code, line, column): names that would become Python identifiers in generated code.
BAD_NAMES = [
    (I + "class = relu", "E225", 2, 1),
    (I + "import = relu", "E225", 2, 1),
    (I + "None = relu", "E225", 2, 1),
    (I + "True = relu", "E225", 2, 1),
    (I + "lambda = relu", "E225", 2, 1),
    (I + "__class__ = relu", "E225", 2, 1),
    (I + "__init__ = relu", "E225", 2, 1),
    (I + "__builtins__ = relu", "E225", 2, 1),
    (I + "block __init__() { relu }\n__init__", "E225", 2, 7),
    (I + "block def() { relu }\ndef", "E225", 2, 7),
    (I + "block b(lambda) { relu }\nb 1", "E225", 2, 9),
    (I + "block b(n, __dict__=1) { relu }\nb 1", "E225", 2, 12),
    (I + "repeat 2 as None { relu }", "E225", 2, 13),
    (I + "repeat 2 as __i { relu }", "E225", 2, 13),
    (I + "parallel concat { branch class { relu }; branch b { relu } }", "E225", 2, 26),
    (I + "parallel add {\n  branch ok { relu }\n  branch __del__ { relu }\n}", "E225", 4, 10),
    # Quotes, new lines, dots and statements never make a name: the grammar stops them.
    (I + "x'y = relu", "E102", 2, 2),
    (I + 'x"; import os; "y = relu', "E202", 2, 1),
    (I + "os.system = relu", "E102", 2, 3),
    (I + "import os", "E202", 2, 1),
    (I + "a\\\nb = relu", "E202", 2, 1),
    (I + "x\x0bimport = relu", "E102", 2, 2),
    # Names that are read, not made: unknown, so refused without looking anything up.
    (I + "conv 4 3x3 __class__=1", "E204", 2, 12),
    (I + "relu from=__import__", "E220", 2, 6),
    (I + "relu\noutput __builtins__", "E220", 3, 8),
    (I + "a = relu\nconcat __dict__", "E220", 3, 8),
    (I + "conv __import__ 3x3", "E203", 2, 6),
]


@pytest.mark.parametrize("src,code,line,col", BAD_NAMES)
def test_names_that_could_escape_generated_code_are_refused(src, code, line, col):
    with pytest.raises(SpecErrors) as info:
        cnnspec.compile_text(src, "hostile.cnn")
    err = info.value.errors[0]
    assert (err.code, err.span.line, err.span.column) == (code, line, col), err.message
    rendered = info.value.render(src)
    assert f"hostile.cnn:{line}:{col}: error[{code}]" in rendered


def test_keyword_names_say_why_and_suggest_another():
    with pytest.raises(SpecErrors) as info:
        cnnspec.compile_text(I + "class = relu")
    err = info.value.errors[0]
    assert "Python keyword" in err.message and "class_" in err.hint


def test_every_python_keyword_is_refused_as_a_tensor_name():
    import keyword

    allowed = set()
    for word in keyword.kwlist:
        try:
            cnnspec.compile_text(I + f"{word} = relu")
            allowed.add(word)
        except SpecErrors as errs:
            assert errs.errors[0].code in ("E225", "E101", "E102"), (word, errs.errors[0])
    assert not allowed


PAYLOADS = [
    "__import__('os').system('touch {marker}')",
    "$(touch {marker})",
    "`touch {marker}`",
    "{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}",
    "'; import os; os.system('touch {marker}'); '",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_strings_are_data_never_run(payload, tmp_path):
    marker = tmp_path / "ran"
    text = payload.format(marker=marker)
    quoted = json.dumps(text)  # the spec's string escapes are a subset of JSON's
    src = (
        I + f"transfer {{ source {quoted}; freeze pattern {quoted} }}\n"
        f"compile {{ augment flip {quoted} }}\nrelu\n"
    )
    # A freeze pattern is matched against the layer names, as a glob and nothing more: this one
    # matches none, which is a located error that quotes the pattern back as text.
    with pytest.raises(SpecErrors) as caught:
        cnnspec.compile_text(src)
    assert caught.value.errors[0].code == "E506" and text in caught.value.errors[0].message
    model = cnnspec.compile_text(src.replace(f"freeze pattern {quoted}", "freeze all"))
    assert model.transfer.source == text
    assert model.compile.augment == ["flip", text]
    document = json.loads(model.to_json())
    assert document["transfer"]["source"] == text
    assert document["compile"]["augment"][1] == text
    assert cnnspec.validate(model.to_json()).transfer.source == text
    assert not marker.exists()


def test_strings_through_the_cli_are_not_run(tmp_path):
    marker = tmp_path / "ran"
    spec = tmp_path / "s.cnn"
    spec.write_text(I + f'transfer {{ source "$(touch {marker})" }}\nrelu\n', encoding="utf-8")
    for command in ("check", "summary", "ir"):
        done = _cli(command, str(spec))
        assert done.returncode == 0, done.stderr
    assert not marker.exists()


EXPANSIONS = [
    (I + "block a() { relu; a }\na", "E223"),
    (I + "block a() { b }\nblock b() { c }\nblock c() { a }\na", "E223"),
    (I + "block a(n) { if n > 0 { a n-1 } else { relu } }\na 100000", "E223"),
    (
        I
        + "".join(f"block b{i}() {{ b{i + 1} }}\n" for i in range(1000))
        + "block b1000() { relu }\nb0",
        "E223",
    ),
    (I + "repeat 1000000000000 { relu }", "E224"),
    (I + "repeat 100000 { relu }", "E215"),
    (I + "repeat 1000 { repeat 1000 { repeat 1000 { relu } } }", "E215"),
    (I + "block b() { repeat 1000 { relu } }\nrepeat 1000 { b }", "E215"),
    (I + "block b(n) { repeat n { relu } }\nrepeat 100000 { b 100000 }", "E215"),
    (I + f"repeat {10**30} {{ relu }}", "E214"),
]


@pytest.mark.parametrize("src,code", EXPANSIONS)
def test_recursion_and_enormous_expansion_are_refused_quickly(src, code):
    start = time.perf_counter()
    with pytest.raises(SpecErrors) as info:
        cnnspec.compile_text(src)
    took = time.perf_counter() - start
    assert info.value.errors[0].code == code, info.value.errors[0].message
    assert info.value.errors[0].span is not None
    assert took < HANG_GUARD_SECONDS


def test_the_refusal_names_the_expansion():
    with pytest.raises(SpecErrors) as info:
        cnnspec.compile_text(I + "repeat 1000 { repeat 1000 { relu } }")
    assert "1,000,000" in info.value.errors[0].message or "layers" in info.value.errors[0].message


@pytest.mark.parametrize(
    "body",
    ["repeat 1 { " * 1000 + "relu" + " }" * 1000, "conv " + " + ".join(["1"] * 5000) + " 3x3"],
)
def test_formatter_refuses_what_would_exhaust_its_stack(body, tmp_path):
    spec = tmp_path / "deep.cnn"
    spec.write_text(I + body + "\n", encoding="utf-8")
    done = _cli("fmt", "--check", str(spec))
    assert done.returncode == 1
    assert "error[E106]" in done.stderr and f"{spec}:2:" in done.stderr
    assert "Traceback" not in done.stderr


VGG = str(Path(__file__).resolve().parent.parent / "specs" / "vgg16.cnn")


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "cnnspec", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_memory_budget_refusal_shows_the_size_and_summary_still_works():
    refused = _cli("check", VGG, "--max-memory", "100MiB")
    assert refused.returncode == 1
    assert "E320" in refused.stderr and "MiB" in refused.stderr
    assert "Traceback" not in refused.stderr
    described = _cli("summary", VGG)
    assert described.returncode == 0
    assert "138,357,544" in described.stdout
    passed = _cli("check", VGG, "--max-memory", "4GiB")
    assert passed.returncode == 0, passed.stderr
