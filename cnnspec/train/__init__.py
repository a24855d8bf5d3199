"""Training, evaluation and prediction from a spec's compile section.

    from cnnspec.train import fit, train, evaluate, predict, make_plan
The backends (torch, keras) are imported only when a run uses them.
"""

from .plan import TrainingPlan, make_plan


def __getattr__(name):
    if name in ("fit", "train", "evaluate", "predict"):
        from . import session

        return getattr(session, name)
    raise AttributeError(name)


__all__ = ["TrainingPlan", "evaluate", "fit", "make_plan", "predict", "train"]
