"""TensorFlow's start-up log lines kept from the user of the `cnnspec` command.

Importing TensorFlow prints, from C++, lines such as

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796526070.864622 5695 port.cc:153] oneDNN custom operations are on. ...

to file descriptor 2, before TF_CPP_MIN_LOG_LEVEL is read, so the variable alone cannot stop
them. The command installs `hide_tensorflow_startup()`: the first import of tensorflow then runs
with descriptor 2 sent to a temporary file, and afterwards every captured line goes back to
stderr except the start-up notices (absl's pre-initialisation banner and informational `I` lines,
with their continuation lines). Warnings and errors (`W`, `E`, `F` lines, Python output) are
passed on. Library users who import cnnspec are not affected: only the command installs it.
"""

from __future__ import annotations

import importlib.machinery
import os
import re
import sys

_BANNER = "WARNING: All log messages before absl::InitializeLog() is called"
# absl's C++ log prefix: severity letter, MMDD, time, thread id, file:line]
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\]")


def startup_noise(lines: list[str]) -> list[str]:
    """The lines worth showing: drops the banner and `I` lines with their continuations.

    >>> startup_noise([_BANNER + " to STDERR", "I0000 00:00:1.5  7 port.cc:153] oneDNN on.",
    ...                "To enable AVX2, rebuild", "W0000 00:00:1.6  7 x.cc:1] low memory"])
    ['W0000 00:00:1.6  7 x.cc:1] low memory']
    """
    kept, dropping = [], False
    for line in lines:
        if line.startswith(_BANNER):
            dropping = True
            continue
        match = _ABSL_LINE.match(line)
        if match:
            dropping = match.group(1) == "I"
        if not dropping:
            kept.append(line)
    return kept


class _QuietLoader:  # the loader protocol (importlib.abc costs 7 ms of start-up to import)
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        import tempfile

        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile(mode="w+b") as capture:
            os.dup2(capture.fileno(), 2)
            try:
                self._loader.exec_module(module)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                text = capture.read().decode("utf-8", "replace")
                for line in startup_noise(text.splitlines()):
                    print(line, file=sys.stderr)


class _QuietFinder:  # the meta path finder protocol
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the first import is the one that logs
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def hide_tensorflow_startup() -> None:
    """Install the filter for this process (idempotent; nothing happens if TF is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # later INFO lines, from TF itself
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietFinder())
