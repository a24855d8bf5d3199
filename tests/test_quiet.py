"""TensorFlow's start-up log lines do not reach the user of the `cnnspec` command."""

import doctest
import importlib.util
import subprocess
import sys

import pytest

from cnnspec import quiet


def test_filter_keeps_warnings_and_drops_startup_notices():
    assert doctest.testmod(quiet).failed == 0
    lines = [
        "I0000 00:00:1796526070.864622    5695 port.cc:153] oneDNN custom operations on.",
        "To enable the following instructions: AVX2 FMA, rebuild TensorFlow.",
        "E0000 00:00:1796526070.9    5695 cuda.cc:1] failed call to cuInit",
        "plain Python output",
    ]
    assert quiet.startup_noise(lines) == lines[2:]


def test_importing_tensorflow_under_the_command_prints_no_startup_lines():
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed")
    code = (
        "from cnnspec.quiet import hide_tensorflow_startup\n"
        "hide_tensorflow_startup()\n"
        "import sys; print('before', file=sys.stderr)\n"
        "import tensorflow\n"
        "print('after', file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.split() == ["before", "after"], done.stderr
