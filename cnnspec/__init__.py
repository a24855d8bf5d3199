"""cnnspec: a compiler for a small declarative language of convolutional networks.

    import cnnspec
    model = cnnspec.compile_file("specs/vgg16.cnn")      # the validated IR
    model.params, model.macs, model.node("stage5.maxpool1").shape
    cnnspec.validate(json_text)                          # an IR from elsewhere, checked

    result = cnnspec.fit("specs/lenet5.cnn", data=(x, y), epochs=5)   # train from Python

Importing cnnspec imports neither torch nor TensorFlow; the backends do, when they are used.
"""

from .compiler import compile_file, compile_text
from .errors import Span, SpecError, SpecErrors
from .ir import IR_VERSION, Model, Node, json_schema
from .validate import validate

__version__ = "0.1.0"


def fit(spec, data, backend: str = "torch", out=None, epochs: int | None = None, **options):
    """Train a spec (a path, spec text, or a compiled Model) on `data` and return the result
    that `cnnspec train` writes to result.json (held-out metrics of the kept checkpoint and of
    the last epoch, best epoch, ...).

    data: a source name ("digits", "shapes") or path, as `cnnspec train --data` takes;
          (x, y) numpy arrays; a torch Dataset or DataLoader; or a tf.data.Dataset
          (cnnspec.data.foreign says how each is read).
    out:  the run folder (checkpoints, history.csv, curves.png), or None to write nothing.
    options: seed, batch_size, resume, progress, workers, cache, device, log (a print-like
          function; None for silence). Raises SpecErrors or cnnspec.data.DataError.
    (`cnnspec.train` is the training package, so the function is `fit`.)"""
    from pathlib import Path

    from .train.session import train
    if isinstance(spec, Model):
        model = spec
    elif isinstance(spec, (str, Path)) and "\n" not in str(spec) and Path(spec).is_file():
        model = compile_file(spec)
    else:
        model = compile_text(str(spec))
    if options.get("log", print) is None:
        options["log"] = lambda *args, **kwargs: None
    if "progress" not in options:
        options["progress"] = False
    return train(model, data, backend=backend, out=out, epochs=epochs, **options)

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
           "fit",
           "json_schema",
           "validate",
]
