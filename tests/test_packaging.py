"""Packaging, for real: build a wheel of this checkout (not editable), check that the grammar,
the templates and every package are inside, install it into a throwaway
venv, and run its `cnnspec check` on a spec outside the repository from a folder outside the
repository. Slower than the other tests (~1 min: a build, a venv, an install)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import cnnspec

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["cnnspec", "grammar", "templates", "pyproject.toml", "README.md"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources, so that the build's own folders (build/,
    *.egg-info) never land in the checkout while other tests run."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(
                origin, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(origin, src / name)
    out = tmp_path_factory.mktemp("dist")
    # With setuptools at hand, build with it (no download); else pip fetches the build backend.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            *isolation,
            "-q",
            "-w",
            str(out),
        ],
        cwd=src,
    )
    (found,) = out.glob("cnnspec-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A venv holding only the wheel; cnnspec's dependencies come from the running
    interpreter's site-packages through a .pth line (a plain path: the editable cnnspec that
    may be installed there is not activated by it)."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        ).stdout.strip()
    )
    import lark
    import pydantic

    deps = sorted({str(Path(m.__file__).resolve().parent.parent) for m in (lark, pydantic)})
    (site / "cnnspec_test_deps.pth").write_text("\n".join(deps) + "\n", encoding="utf-8")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ]
    )
    return venv


def test_wheel_holds_grammar_templates_and_every_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "cnnspec/grammar/cnnspec.lark" in names
    templates = sorted((ROOT / "templates").glob("*.j2"))
    for template in templates:
        assert f"cnnspec/templates/{template.name}" in names
    packages = {
        p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "cnnspec").rglob("__init__.py")
    }
    missing = [p for p in sorted(packages) if f"{p}/__init__.py" not in names]
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "cnnspec").rglob("*.py")}
    assert modules <= names
    assert not any(n.startswith(("grammar/", "templates/", "tests/")) for n in names)


def test_installed_wheel_checks_a_spec_outside_the_repository(installed, tmp_path):
    spec = tmp_path / "net.cnn"
    shutil.copy2(ROOT / "specs" / "resnet18.cnn", spec)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    done = _run([str(installed / "bin" / "cnnspec"), "check", str(spec)], cwd=elsewhere)
    here = cnnspec.compile_file(ROOT / "specs" / "resnet18.cnn")  # this checkout's answer
    assert done.stdout.startswith(f"{spec}: ok") and f"{here.params:,} params" in done.stdout


def test_installed_package_reads_its_own_files(installed, tmp_path):
    # templates/ holds no template until a backend brings one; then it must be found too.
    templates = "str(r.path('templates'))" if list((ROOT / "templates").glob("*.j2")) else "''"
    probe = (
        "import cnnspec, cnnspec.parse as p, "
        "cnnspec.resources as r, json; "
        "print(json.dumps([cnnspec.__file__, str(p.grammar_path()), p.__file__, "
        f"{templates}]))"
    )
    done = _run([str(installed / "bin" / "python"), "-c", probe], cwd=tmp_path)
    module, grammar, parser, templates = json.loads(done.stdout)
    venv = str(installed.resolve())
    for found in filter(None, (module, grammar, parser, templates)):
        assert found.startswith(venv), f"{found} is not inside the installed venv"


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done
