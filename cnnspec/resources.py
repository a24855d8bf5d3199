"""Files that ship with cnnspec besides its code: the grammar (grammar/cnnspec.lark and its
stored tables) and the code templates (templates/*.j2). An installed wheel holds them inside
the package, as cnnspec/grammar and cnnspec/templates (pyproject.toml maps the folders there);
a checkout or an editable install keeps them at the top of the repository."""

from __future__ import annotations

from pathlib import Path

SHIPPED = ("grammar", "templates")


def path(name: str) -> Path:
    """The folder `name` ("grammar" or "templates"), wherever this installation keeps it."""
    if name not in SHIPPED:
        raise ValueError(f"cnnspec ships no folder {name!r}; it ships {', '.join(SHIPPED)}")
    here = Path(__file__).resolve().parent
    for candidate in (here / name, here.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"the {name} folder was not found in {here} nor beside it; reinstall cnnspec"
    )
