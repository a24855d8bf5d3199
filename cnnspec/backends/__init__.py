"""Backends: each turns the IR into a framework's model or into its source code.

They import their framework lazily; `import cnnspec` imports none of them.
"""
