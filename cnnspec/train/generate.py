"""Generative training with PyTorch, for networks written as two specs.

The language has no random sampling, so a VAE is an encoder spec (outputs mean, logvar)
plus a decoder spec, and a GAN a generator spec plus a discriminator spec; the training
code joins them.
    VAE (Kingma & Welling 2013): z = mean + exp(logvar / 2) * eps; loss per image =
        binary cross-entropy of the reconstruction summed over pixels
        + KL(q(z|x) || N(0, I)) = -1/2 sum(1 + logvar - mean^2 - exp(logvar)).
    DCGAN (Radford et al. 2015): images scaled to [-1, 1] (the generator ends in tanh),
        Adam lr 2e-4, beta1 0.5; the discriminator minimises BCE on real (1) and fake (0),
        the generator the non-saturating loss -log D(G(z)) (Goodfellow et al. 2014).
Both write history.csv, result.json, curves.png, samples.png (a grid from fixed noise)
and last checkpoints (safetensors) of both networks into the run directory.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..ir import Model
from . import checkpoint as ckpt
from .plan import final_activation
from .report import plot_curves, save_grid, write_history, write_result


def strip_final(model: Model) -> tuple[Model, str | None]:
    """The model without its output's final activation (applied by the loss instead)."""
    from .plan import _identity
    name = model.outputs[-1]
    act = final_activation(model, name)
    if act not in ("sigmoid",):
        return model, act
    nodes = []
    for node in model.nodes:
        if node.name == name:
            layer = _identity() if node.layer.kind == "activation" else \
                node.layer.model_copy(update={"activation": None})
            node = node.model_copy(update={"layer": layer})
        nodes.append(node)
    copy = model.model_copy(update={"nodes": nodes})
    copy.__dict__.pop("_node_index", None)
    return copy, act


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()


def _latent(n: int, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    z = torch.randn(n, int(np.prod(shape)), generator=gen)
    return z.reshape(n, shape[-1], *shape[:-1]) if len(shape) == 3 else z


def _save(out: Path, name: str, net) -> str:
    from safetensors.torch import save_file
    path = out / f"{name}.safetensors"
    tensors = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    ckpt.atomic_path(path, lambda tmp: save_file(tensors, tmp))
    return path.name


def _finish(out: Path, history: list[dict], result: dict, title: str) -> None:
    write_history(out, history)
    plot_curves(out, history, title)
    write_result(out, result)


def train_vae(encoder: Model, decoder: Model, dataset, out: str | Path, epochs: int = 10,
              batch_size: int = 64, lr: float = 1e-3, seed: int = 0, val_split: float = 0.1,
              log=print) -> dict:
    from ..backends.torch import build
    from ..data import batches
    out = Path(out)
    torch.manual_seed(seed)
    enc = build(encoder)
    dec_ir, act = strip_final(decoder)
    dec = build(dec_ir)
    logits = act == "sigmoid"
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=lr)
    train, val = dataset.split(val_split, seed)
    latent = decoder.input_shape

    def step(batch, learn: bool) -> dict:
        x = _nchw(batch["x"])
        mean, logvar = enc(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if learn else mean
        recon = dec(z.reshape(len(z), latent[-1], *latent[:-1]) if len(latent) == 3 else z)
        bce = (F.binary_cross_entropy_with_logits(recon, x, reduction="none") if logits
               else F.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), x, reduction="none"))
        rec = bce.flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum(1)).mean()
        loss = rec + kl
        if learn:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return {"loss": float(loss.detach()), "reconstruction": float(rec.detach()),
                "kl": float(kl.detach())}

    history: list[dict] = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        row: dict = {"epoch": epoch + 1}
        for split, data, learn in (("train", train, True), ("val", val, False)):
            enc.train(learn)
            dec.train(learn)
            sums, n = {}, 0
            with torch.set_grad_enabled(learn):
                for batch in batches(data, batch_size, shuffle=learn, seed=seed, epoch=epoch):
                    part = step(batch, learn)
                    k = len(batch["x"])
                    sums = {key: sums.get(key, 0.0) + v * k for key, v in part.items()}
                    n += k
            row.update({f"{split}_{key}": v / max(n, 1) for key, v in sums.items()})
        history.append(row)
        log(f"epoch {epoch + 1}/{epochs}  " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()
                                                         if k != "epoch"))
        write_history(out, history)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        dec.eval()
        samples = dec(_latent(64, latent, gen))
        samples = torch.sigmoid(samples) if logits else samples
    save_grid(out / "samples.png", samples.permute(0, 2, 3, 1).numpy())
    files = [_save(out, "encoder", enc), _save(out, "decoder", dec)]
    result = {"task": "generate", "model": "vae", "backend": "torch", "epochs_run": epochs,
              "best_epoch": int(np.argmin([r["val_loss"] for r in history])) + 1,
              "metrics": {k[4:]: history[-1][k] for k in history[-1] if k.startswith("val_")},
              "first_train_loss": history[0]["train_loss"], "samples": "samples.png",
              "weights": files, "seconds": round(time.perf_counter() - t0, 2),
              "n_train": len(train), "n_val": len(val)}
    _finish(out, history, result, "VAE")
    return result


def train_gan(generator: Model, discriminator: Model, dataset, out: str | Path,
              epochs: int = 1, batch_size: int = 64, seed: int = 0, max_batches: int | None = None,
              log=print) -> dict:
    from ..backends.torch import build
    from ..data import batches
    out = Path(out)
    torch.manual_seed(seed)
    g = build(generator)
    d_ir, act = strip_final(discriminator)
    d = build(d_ir)
    logits = act == "sigmoid"
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    latent = generator.input_shape
    gen = torch.Generator().manual_seed(seed)
    fixed = _latent(64, latent, gen)

    def bce(score, label: float):
        target = torch.full_like(score, label)
        return (F.binary_cross_entropy_with_logits(score, target) if logits
                else F.binary_cross_entropy(score.clamp(1e-6, 1 - 1e-6), target))

    history: list[dict] = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        sums, n = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0}, 0
        for i, batch in enumerate(batches(dataset, batch_size, seed=seed, epoch=epoch)):
            if max_batches is not None and i >= max_batches:
                break
            real = _nchw(batch["x"]) * 2 - 1                 # [0, 1] -> [-1, 1], as tanh
            z = _latent(len(real), latent, gen)
            fake = g(z)
            s_real, s_fake = d(real), d(fake.detach())
            loss_d = bce(s_real, 1.0) + bce(s_fake, 0.0)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            loss_g = bce(d(fake), 1.0)                       # non-saturating generator loss
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            prob = torch.sigmoid if logits else (lambda t: t)
            k = len(real)
            sums["loss_d"] += float(loss_d.detach()) * k
            sums["loss_g"] += float(loss_g.detach()) * k
            sums["d_real"] += float(prob(s_real.detach()).mean()) * k
            sums["d_fake"] += float(prob(s_fake.detach()).mean()) * k
            n += k
        row = {"epoch": epoch + 1, **{f"train_{k}": v / max(n, 1) for k, v in sums.items()}}
        history.append(row)
        log(f"epoch {epoch + 1}/{epochs}  " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()
                                                         if k != "epoch"))
    with torch.no_grad():
        g.eval()
        samples = (g(fixed) + 1) / 2
    save_grid(out / "samples.png", samples.permute(0, 2, 3, 1).numpy())
    files = [_save(out, "generator", g), _save(out, "discriminator", d)]
    result = {"task": "generate", "model": "gan", "backend": "torch", "epochs_run": epochs,
              "best_epoch": epochs, "metrics": {k[6:]: v for k, v in history[-1].items()
                                                if k.startswith("train_")},
              "samples": "samples.png", "weights": files,
              "seconds": round(time.perf_counter() - t0, 2), "n_train": len(dataset)}
    _finish(out, history, result, "DCGAN")
    return result
