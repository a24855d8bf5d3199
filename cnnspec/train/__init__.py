"""Training, evaluation and prediction from a spec's compile section.

    from cnnspec.train import train, evaluate, predict, make_plan
The backends (torch, keras) are imported only when a run uses them.
"""

from .plan import Plan, make_plan


def __getattr__(name):
    if name in ("train", "evaluate", "predict"):
        from . import session
        return getattr(session, name)
    raise AttributeError(name)


__all__ = ["Plan", "evaluate", "make_plan", "predict", "train"]
