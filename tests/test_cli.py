"""The `cnnspec` command: exit codes 0/1/2, JSON keys, --explain formulas, markdown, ir,
schema, validate, no tracebacks, and `import cnnspec` staying free of torch and TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnspec.cli import main

ROOT = Path(__file__).resolve().parent.parent
VGG = str(ROOT / "specs" / "vgg16.cnn")
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def cli(*argv, stdin: str | None = None) -> subprocess.CompletedProcess:
    """The command as a user runs it: a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "cnnspec", *argv],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        input=stdin,
        timeout=120,
        check=False,
    )


def run(capsys, *argv) -> tuple[int, str, str]:
    """The command in this process (fast): exit code, stdout, stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def bad(tmp_path) -> str:
    path = tmp_path / "bad.cnn"
    path.write_text("input 8x8x3\nconv 8 3x3 strides=2\n")
    return str(path)


# --- exit codes ----------------------------------------------------------------------------


def test_check_ok(capsys):
    code, out, _ = run(capsys, "check", VGG)
    assert code == 0
    assert "138,357,544 params" in out and "15,470,264,320 MACs" in out


def test_check_error_exits_1_with_located_message(capsys, bad):
    code, out, err = run(capsys, "check", bad)
    assert code == 1 and out == ""
    assert f"{bad}:2:12: error[E204]: 'conv' has no argument 'strides'" in err
    assert "   2 | conv 8 3x3 strides=2" in err
    assert "     |            ^^^^^^^^^" in err
    assert "hint: did you mean 'stride'?" in err


def test_check_several_files_exit_1_if_any_fails(capsys, bad):
    code, out, err = run(capsys, "check", VGG, bad)
    assert code == 1 and "vgg16.cnn: ok" in out and "error[E204]" in err


def test_check_json_errors(capsys, bad):
    code, out, _ = run(capsys, "check", bad, "--format", "json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False
    assert data["errors"][0]["code"] == "E204"
    assert data["errors"][0]["span"]["line"] == 2


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["summary"],
        ["check"],
        ["summary", VGG, "--format", "xml"],
        ["check", "--nope", VGG],
        ["check", VGG, "--max-memory", "lots"],
    ],
)
def test_usage_errors_exit_2(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err


def test_an_unknown_command_lists_every_command(capsys):
    from cnnspec.cli import _command_modules

    code, _, err = run(capsys, "bogus")
    assert code == 2
    for mod in _command_modules():
        assert f"'{mod.NAME}'" in err


def test_each_command_is_found_by_its_name_alone():
    # main() builds only the sub-parser of the command it runs, found by its module's name
    from cnnspec.cli import _command_modules

    for mod in _command_modules():
        assert [m.NAME for m in _command_modules(mod.NAME)] == [mod.NAME]


def test_missing_file_is_a_spec_error(capsys, tmp_path):
    code, _, err = run(capsys, "check", str(tmp_path / "nope.cnn"))
    assert code == 1 and "error[E001]" in err


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("cnnspec ")


# --- summary -----------------------------------------------------------------------------------


def test_summary_json_keys(capsys):
    code, out, _ = run(capsys, "summary", VGG, "--format", "json")
    data = json.loads(out)
    assert code == 0
    assert data["input_shape"] == {"height": 224, "width": 224, "channels": 3}
    assert data["output_shape"] == {"features": 1000}
    assert (
        data["total_params"],
        data["trainable_params"],
        data["non_trainable_params"],
        data["macs"],
    ) == (138357544, 138357544, 0, 15470264320)
    layer = data["layers"][1]
    assert {"name", "kind", "output_shape", "params", "macs"} <= set(layer)
    assert layer == {
        **layer,
        "name": "stage1.conv1",
        "kind": "conv",
        "output_shape": [224, 224, 64],
        "params": 1792,
        "macs": 86704128,
    }
    assert sum(x["params"] for x in data["layers"]) == data["total_params"]
    assert sum(x["macs"] for x in data["layers"]) == data["macs"]


def test_summary_json_feature_map_output(capsys):
    code, out, _ = run(capsys, "summary", str(ROOT / "specs" / "unet.cnn"), "--format", "json")
    if code:
        pytest.fail(out)
    shape = json.loads(out)["output_shape"]
    assert set(shape) == {"height", "width", "channels"}


def test_summary_table(capsys):
    code, out, _ = run(capsys, "summary", VGG)
    assert code == 0
    assert "total params: 138,357,544" in out
    assert "MACs: 15,470,264,320" in out
    assert "stage1.conv1" in out and "224x224x64" in out


def test_explain_shows_the_course_formulas(capsys):
    code, out, _ = run(capsys, "summary", VGG, "--explain")
    assert code == 0
    assert "(224 - 3 + 2*1) / 1 + 1 = 224" in out
    assert "3*3*3*64 + 64 = 1,792" in out
    assert "224*224*64*3*3*3 = 86,704,128" in out
    assert "(224 - 2 + 2*0) / 2 + 1 = 112" in out  # the first pool
    assert "25088*4096 + 4096 = 102,764,544" in out  # the first dense layer


def test_markdown(capsys):
    code, out, _ = run(capsys, "summary", VGG, "--format", "markdown")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "## vgg16"
    assert "| layer | kind | output | params | MACs |" in lines
    assert "| stage1.conv1 | conv+relu | 224x224x64 | 1,792 | 86,704,128 |" in lines
    assert any(ln.startswith("- total params: 138,357,544") for ln in lines)


def test_summary_error_exit_1(capsys, bad):
    code, _, err = run(capsys, "summary", bad)
    assert code == 1 and "error[E204]" in err


# --- ir, schema, validate ------------------------------------------------------------------------


def test_ir_then_validate(capsys, tmp_path):
    code, out, _ = run(capsys, "ir", VGG)
    data = json.loads(out)
    assert code == 0 and data["version"] == 1 and data["totals"]["total_params"] == 138357544
    path = tmp_path / "vgg.json"
    path.write_text(out)
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 0 and "138,357,544 params" in out
    code, out, _ = run(capsys, "validate", str(path), "--format", "json")
    assert code == 0 and json.loads(out)["ok"] is True


def test_ir_error_is_json(capsys, bad):
    code, out, _ = run(capsys, "ir", bad)
    assert code == 1 and json.loads(out)["errors"][0]["code"] == "E204"


def test_validate_corrupted(capsys, tmp_path):
    code, out, _ = run(capsys, "ir", VGG)
    data = json.loads(out)
    data["nodes"][1]["trainable"] = 5
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    code, _, err = run(capsys, "validate", str(path))
    assert code == 1
    assert f"{path}#/nodes/1/trainable: error[E606]" in err
    code, out, _ = run(capsys, "validate", str(path), "--format", "json")
    assert json.loads(out)["errors"][0]["pointer"] == "/nodes/1/trainable"


def test_validate_stdin_and_bad_json():
    result = cli("validate", "-", stdin="{not json")
    assert result.returncode == 1 and "error[E601]" in result.stderr
    assert "Traceback" not in result.stderr


def test_schema(capsys):
    code, out, _ = run(capsys, "schema")
    schema = json.loads(out)
    assert code == 0 and schema["title"] == "cnnspec IR" and "nodes" in schema["properties"]


# --- memory budget ----------------------------------------------------------------------------


def test_max_memory(capsys):
    code, _, err = run(capsys, "check", VGG, "--max-memory", "500MiB")
    assert code == 1
    assert "error[E320]: the network needs 586.0 MiB, more than --max-memory 500.0 MiB" in err
    assert "527.8 MiB of parameters + 58.3 MiB of activations" in err
    assert run(capsys, "check", VGG, "--max-memory", "4GiB")[0] == 0
    code, out, _ = run(capsys, "summary", VGG)
    assert code == 0 and "total memory: 586.0 MiB" in out


# --- no tracebacks, as a process ----------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"# only a comment\n",
        b"\xff\xfe\x00binary",
        b"input 8x8x3\x00",
        b"input 8x8x3\r\nrelu\r\n",
        b"input 8x8x3\n" + b"(" * 5000,
        b"input 8x8x3\nrepeat 100000 { repeat 100000 { relu } }",
        "input 8x8x3\nbl\u00f6ck = relu\n".encode(),
        b"input 8x8x3\n" + b"relu\n" * 3,
    ],
)
def test_no_traceback(tmp_path, content):
    path = tmp_path / "x.cnn"
    path.write_bytes(content)
    for command in ("check", "summary", "ir"):
        result = cli(command, str(path))
        assert result.returncode in (0, 1), result.stderr
        assert "Traceback" not in result.stderr + result.stdout


def test_directory_and_missing_file_no_traceback(tmp_path):
    for target in (str(tmp_path), str(tmp_path / "missing.cnn")):
        result = cli("summary", target)
        assert result.returncode == 1 and "Traceback" not in result.stderr


def test_import_does_not_load_frameworks():
    code = (
        "import sys, cnnspec; cnnspec.compile_file(sys.argv[1]).to_json(); "
        "import cnnspec.cli, cnnspec.summary; "
        "bad = [m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, VGG],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_refuses_a_compile_section_that_cannot_train(tmp_path):
    spec = tmp_path / "bad.cnn"
    spec.write_text(
        "input 32x32x1\nconv 6 5x5 relu; maxpool 2; flatten\ndense 10 softmax\n"
        "compile {\n  loss binary_crossentropy\n  metrics mean_iou\n}\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "cnnspec", "check", str(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert f"{spec}:5:3: error[E510]" in done.stderr
    assert f"{spec}:6:3: error[E513]" in done.stderr
    assert "Traceback" not in done.stderr
