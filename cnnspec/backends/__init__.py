"""Backends: the IR turned into framework models or source code.

Importing this package imports no framework; each backend module imports its own when used.
Every backend is looked up by name (`cnnspec.backends.<name>`) and offers `generate(model) -> str`.
"""

BACKENDS = ("torch", "keras")
