"""cnnspec: a compiler for a small declarative language of convolutional networks.

    import cnnspec
    model = cnnspec.compile_file("specs/vgg16.cnn")      # the validated IR
    model.params, model.macs, model.node("stage5.maxpool1").shape
    cnnspec.validate(json_text)                          # an IR from elsewhere, checked

    from cnnspec.train import fit                              # training from Python
    result = fit("specs/lenet5.cnn", data=(x, y), epochs=5)

Importing cnnspec imports neither torch nor TensorFlow; the backends do, when they are used.
"""

from .compiler import compile_file, compile_text
from .errors import Span, SpecError, SpecErrors
from .ir import IR_VERSION, Model, Node, json_schema
from .validate import validate

__version__ = "0.1.0"


__all__ = [
    "IR_VERSION",
    "Model",
    "Node",
    "Span",
    "SpecError",
    "SpecErrors",
    "__version__",
    "compile_file",
    "compile_text",
    "json_schema",
    "validate",
]
