"""Transfer learning from the spec's `transfer` section: find the source weights, load them
through the backends' layer order, freeze what the spec says.

    transfer {
      source torchvision:resnet18        # or keras:VGG16, "ckpt.safetensors", "runs/a" ...
      freeze until layer3 bn=inference  # none | all | first N | until NAME | pattern "GLOB"
      head { gap; dense 10 softmax }
    }

`freeze` decides on the IR (pure, no framework: `cnnspec summary` shows the counts);
`sources` finds files; `tensors` reads them into framework-neutral arrays; `apply` loads
them into a built torch module or Keras model and freezes it. Nothing here downloads.
"""

from __future__ import annotations

from .freeze import apply_freeze, frozen_names

__all__ = ["apply_freeze", "frozen_names", "prepare"]


def prepare(net, model, backend: str | None = None, log=None):
    """Load the source weights into `net` (built from `model`) and freeze it; see apply."""
    from .apply import prepare as _prepare

    return _prepare(net, model, backend, log)
