"""A measured answer to "do the generated samples look like the data?".

A small classifier (the judge) is trained on the real, labelled images the generative model
learned from, and then reads a batch of generated samples. Samples that look like the data
are classified with confidence, and a generator that covers the data spreads them over the
classes. This is the idea of the Inception Score (Salimans et al. 2016, "Improved Techniques
for Training GANs", section 4), with a classifier trained on the data itself in place of
Inception-v3 (as the MNIST experiments of that line of work do):
    confidence = mean over samples of max_y p(y|x)
    classes    = how many classes the judge gives, with p >= 0.9, to at least 1% of them
    score      = exp(E_x KL(p(y|x) || p(y))), between 1 (one class, or no confidence)
                 and the number of classes (confident and balanced)
The judge never sees generated images while it learns. Its held-out accuracy and the scores
of held-out real images (the ceiling) are reported beside the scores of samples, so that a
judge that would call anything a digit shows up as one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 16  # samples and images are judged at most this large (area resize): the
# digits are 8x8 scans, and a small judge trains in seconds on 2 cores
CONFIDENT = 0.9  # a sample "shows" a class when the judge gives it at least this
MIN_SHARE = 0.01  # and a class "appears" when at least this share of samples shows it

JUDGE_SPEC = """\
model judge
input {h}x{w}x{c}
conv 16 3x3 same relu; maxpool 2
conv 32 3x3 same relu; maxpool 2
flatten
dropout 0.3
dense {k} softmax
"""


@dataclass
class Judge:
    net: torch.nn.Module
    size: tuple[int, int]
    classes: int
    accuracy: float  # on the held-out real images
    real: dict  # score() of the held-out real images: the ceiling

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """p(y|x) for NCHW images in [0, 1] of any size the judge can shrink from."""
        self.net.eval()
        with torch.no_grad():
            return torch.cat(
                [
                    F.softmax(self.net(_fit(part, self.size)), dim=1)
                    for part in torch.split(images, 256)
                ]
            )

    def score(self, images: torch.Tensor) -> dict:
        return score_probabilities(self.probabilities(images).numpy(), self.classes)

    def summary(self) -> dict:
        return {"accuracy": round(self.accuracy, 4), "size": list(self.size), "real": self.real}


def score_probabilities(p: np.ndarray, classes: int) -> dict:
    """confidence, classes and score (see the module docstring) of rows of p(y|x)."""
    top = p.max(1)
    shown = np.bincount(p.argmax(1)[top >= CONFIDENT], minlength=classes)
    marginal = p.mean(0)
    kl = (p * (np.log(p + 1e-12) - np.log(marginal + 1e-12))).sum(1)
    return {
        "confidence": round(float(top.mean()), 4),
        "classes": int((shown >= MIN_SHARE * len(p)).sum()),
        "score": round(float(np.exp(kl.mean())), 4),
    }


def _fit(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """NCHW images at `size` (area averaging: each pixel the mean of the ones it covers)."""
    if tuple(images.shape[-2:]) != size:
        images = F.interpolate(images, size=size, mode="area")
    return images


def judge_size(shape: tuple[int, ...]) -> tuple[int, int]:
    return min(shape[0], SIZE), min(shape[1], SIZE)


def train_judge(
    dataset, seed: int = 0, epochs: int = 12, batch_size: int = 32, lr: float = 3e-3
) -> Judge | None:
    """A classifier of the real images (None when the data has fewer than two classes)."""
    import cnnspec

    from ..backends.torch import build
    from ..data import batches

    k = len(dataset.classes)
    if k < 2:
        return None
    train, val = dataset.split(0.1, seed)
    h, w, c = dataset.input_shape
    size = judge_size((h, w))
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    net = build(
        cnnspec.compile_text(JUDGE_SPEC.format(h=size[0], w=size[1], c=c, k=k)), logits=True
    )
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for epoch in range(epochs):
        net.train()
        for batch in batches(train, batch_size, seed=seed, epoch=epoch):
            x = _fit(_nchw(batch["x"]), size)
            loss = F.cross_entropy(net(x), torch.from_numpy(batch["y"]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    torch.random.set_rng_state(state)  # judging leaves the caller's random stream alone
    judge = Judge(net, size, k, 0.0, {})
    p = judge.probabilities(_nchw(val.x))
    judge.accuracy = float((p.argmax(1).numpy() == val.y).mean())
    judge.real = score_probabilities(p.numpy(), k)
    return judge


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
