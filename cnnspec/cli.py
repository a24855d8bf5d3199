"""The `cnnspec` command: arguments, output and exit codes; the work is done elsewhere.

Exit codes: 0 ok, 1 the spec (or data, weights) has an error, 2 the command line is wrong.
Each sub-command is a module in cnnspec/commands with NAME, HELP, configure(parser) and
run(args) -> int; adding a command is adding a module.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands as _commands_pkg
from .errors import SpecError, SpecErrors
from .quiet import hide_tensorflow_startup

EXIT_OK, EXIT_SPEC, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 on usage errors: keep that, say it plainly
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _module_name(command: str) -> str:
    """commands/<command>.py, or <command>_.py where the command is a Python keyword."""
    return command + "_" if command == "import" else command


def _command_modules(only: str | None = None):
    """Every command module in help order, or just the one that runs: importing all sixteen
    and building their parsers is a tenth of a `cnnspec summary`."""
    names = sorted(
        m.name for m in pkgutil.iter_modules(_commands_pkg.__path__) if not m.name.startswith("_")
    )
    if only is not None and _module_name(only) in names:
        mod = importlib.import_module(f"{_commands_pkg.__name__}.{_module_name(only)}")
        if mod.NAME == only:
            return [mod]
    mods = [importlib.import_module(f"{_commands_pkg.__name__}.{n}") for n in names]
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 50))


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; given the command line, only its command's sub-parser is built
    (all of them for `--help`, no command or an unknown one, so that usage lists them)."""
    from . import __version__

    parser = _Parser(
        prog="cnnspec",
        description="Compile .cnn network specs: check them, "
        "summarise them, build them in PyTorch or Keras.",
    )
    parser.add_argument("--version", action="version", version=f"cnnspec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    only = argv[0] if argv else None
    for mod in _command_modules(only):
        p = sub.add_parser(
            mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP)
        )
        mod.configure(p)
        p.add_argument(
            "--scale",
            metavar="NAME",
            default=None,
            help="compile at this named scale of the spec's scales section (default: its first)",
        )
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    _tolerant_streams()
    hide_tensorflow_startup()
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    from .commands import _common

    _common.selected_scale = getattr(args, "scale", None)
    try:
        return args._run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except (SpecError, SpecErrors) as exc:
        # Found after compiling, by a backend (E4xx: a name Keras cannot hold, a size a
        # framework cannot take): located in the spec like any other spec error.
        from .commands._common import report

        errs = exc if isinstance(exc, SpecErrors) else SpecErrors([exc])
        report(errs, errs.errors[0].path if errs.errors else None)
        return EXIT_SPEC
    except OSError as exc:
        # A full disk, a read-only folder, a vanished file: say which and stop. Outputs are
        # written to a temporary file and renamed, so what was there before is untouched.
        from .errors import printable

        where = f": {printable(str(exc.filename))}" if exc.filename else ""
        print(f"cnnspec {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_SPEC


def _tolerant_streams() -> None:
    """A console that cannot show a character (LANG=C without UTF-8 mode, PYTHONIOENCODING
    =ascii) gets it as a backslash escape rather than a UnicodeEncodeError traceback."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding not in ("utf8", "utf_8") and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


if __name__ == "__main__":
    sys.exit(main())
