"""Generative training with PyTorch, for networks written as two specs.

The language has no random sampling, so a VAE is an encoder spec (outputs mean, logvar)
plus a decoder spec, and a GAN a generator spec plus a discriminator spec; the training
code joins them.
    VAE (Kingma & Welling 2013): z = mean + exp(logvar / 2) * eps; loss per image =
        binary cross-entropy of the reconstruction summed over pixels
        + KL(q(z|x) || N(0, I)) = -1/2 sum(1 + logvar - mean^2 - exp(logvar)).
    DCGAN (Radford et al. 2015): images scaled to [-1, 1] (the generator ends in tanh),
        weights N(0, 0.02), Adam lr 2e-4, beta1 0.5; the discriminator minimises BCE on real
        (1) and fake (0), the generator the non-saturating loss -log D(G(z)) (Goodfellow et
        al. 2014).
Both write history.csv, result.json, curves.png, samples.png (a grid from fixed noise)
and last checkpoints (safetensors) of both networks into the run directory, and after every
epoch generate_state.pt, from which `resume=True` (`--resume`) continues a killed run with
the history and the numbers of one that was never stopped. Unless told
not to, both also train a judge (train/judge.py) on the labelled real images and score 1,000
prior samples after every epoch (sample_confidence, sample_classes, sample_score in
history.csv and result.json's metrics), and once before training (result.json's
judge.untrained, the floor a model that learned nothing stays at).
"""

from __future__ import annotations

import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import Span, SpecError, SpecErrors
from ..ir import Model
from ..logits import final_activation, strip_final_activations
from . import checkpoint as ckpt
from .report import plot_curves, save_grid, write_history, write_result

GAN_EPOCHS = 30  # what `cnnspec train G --discriminator D` runs without --epochs
JUDGED = 1000  # generated samples the judge (train/judge.py) reads per epoch


def strip_final(model: Model) -> tuple[Model, str | None]:
    """The model without its output's final sigmoid (applied by the loss instead), and the
    activation the output had."""
    act = final_activation(model.node(model.outputs[-1]).layer)
    if act != "sigmoid":
        return model, act
    return strip_final_activations(model, [model.outputs[-1]]), act


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


def _finish(
    out: Path, history: list[dict], result: dict, title: str, referee, untrained: dict
) -> None:
    if referee is not None:
        result["judge"] = {
            **referee.summary(),
            "n_samples": JUDGED,
            "untrained": _unprefixed(untrained),
        }
    write_history(out, history)
    plot_curves(out, history, title)
    write_result(out, result)


def _end_epoch(
    out: Path,
    history: list[dict],
    row: dict,
    epochs: int,
    nets: dict,
    opts: dict,
    gen: torch.Generator,
    untrained: dict,
    log,
) -> None:
    """The epoch's row into the history, history.csv and the resume state, then the log line
    (after the state: a run stopped while logging has its epoch saved)."""
    history.append(row)
    write_history(out, history)
    _save_state(out, history, nets, opts, gen, untrained)
    log(
        f"epoch {row['epoch']}/{epochs}  "
        + "  ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "epoch")
    )


STATE = "generate_state.pt"


def _save_state(
    out: Path, history: list[dict], nets: dict, opts: dict, gen: torch.Generator, untrained: dict
) -> None:
    """Everything --resume needs after an epoch, in one file written atomically (a kill
    leaves the previous epoch's file): both networks, their optimizers, the latent and the
    global random streams, the history. Tensors, numbers and strings only, so it is read back
    with torch.load(weights_only=True)."""
    state = {
        "epoch": len(history),
        "history": history,
        "untrained": untrained,
        "nets": {
            k: {n: t.detach().clone() for n, t in net.state_dict().items()}
            for k, net in nets.items()
        },
        "optimizers": {k: opt.state_dict() for k, opt in opts.items()},
        "latent_rng": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    ckpt.atomic_path(out / STATE, lambda tmp: torch.save(state, tmp))


def _resume(
    out: Path, nets: dict, opts: dict, gen: torch.Generator, epochs: int, log
) -> dict | None:
    """The saved state of an earlier run in `out`, loaded into the networks, optimizers and
    random streams; None (and a note) when there is none."""
    path = out / STATE
    if not path.exists():
        log(f"no checkpoint in {out}: starting from the first epoch")
        return None
    try:
        state = torch.load(path, weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        zipfile.BadZipFile,
    ) as exc:  # pickle payloads and truncated files: say why
        raise ValueError(
            f"{path} cannot be read as a resume state (corrupt, or not "
            f"written by cnnspec): {str(exc).splitlines()[0][:200]}"
        ) from None
    try:
        for k, net in nets.items():
            net.load_state_dict(state["nets"][k])
        for k, opt in opts.items():
            opt.load_state_dict(state["optimizers"][k])
        gen.set_state(state["latent_rng"])
        torch.set_rng_state(state["torch_rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"{out} holds a run of other networks: its state does not fit these "
            f"specs ({_first_line(exc)}); train into another --out, or replace "
            "it with --overwrite"
        ) from None
    log(f"resuming after epoch {state['epoch']} of {epochs}")
    return state


def check_vae(encoder: Model, decoder: Model) -> None:
    """Raise SpecErrors, located in the specs, unless the encoder gives (mean, logvar) of one
    latent shape, the decoder reads that shape and gives back the encoder's input shape
    (else the mismatch surfaces inside torch, with no spec location)."""
    errors = []
    shapes = encoder.output_shapes
    if len(shapes) != 2 or shapes[0] != shapes[1]:
        errors.append(
            _pair_error(
                "E520",
                encoder,
                encoder.outputs[-1],
                "a VAE encoder has two outputs of one "
                f"shape (mean, logvar); this one has {_shapes(shapes)}",
                "end the encoder with `output mean, logvar`",
            )
        )
    elif tuple(decoder.input_shape) != tuple(shapes[0]):
        errors.append(
            _pair_error(
                "E521",
                decoder,
                decoder.nodes[0].name,
                f"the decoder reads "
                f"{_shape(decoder.input_shape)} but the encoder's latent (mean) is "
                f"{_shape(shapes[0])}",
                f"make the decoder's input {_shape(shapes[0])}",
            )
        )
    if tuple(decoder.output_shapes[-1]) != tuple(encoder.input_shape):
        errors.append(
            _pair_error(
                "E522",
                decoder,
                decoder.outputs[-1],
                f"the decoder gives "
                f"{_shape(decoder.output_shapes[-1])} images but the encoder reads "
                f"{_shape(encoder.input_shape)}",
                "the decoder must rebuild the encoder's input",
            )
        )
    if errors:
        raise SpecErrors(errors)


def check_gan(generator: Model, discriminator: Model) -> None:
    """Raise SpecErrors, located in the specs, unless the discriminator reads the
    generator's images and gives one real/fake score per image (a 10-way classifier is not
    a DCGAN discriminator)."""
    errors = []
    score = tuple(discriminator.output_shapes[-1])
    if len(discriminator.outputs) != 1 or int(np.prod(score)) != 1:
        errors.append(
            _pair_error(
                "E523",
                discriminator,
                discriminator.outputs[-1],
                f"a DCGAN discriminator gives "
                f"one score per image; this one gives {_shapes(discriminator.output_shapes)}",
                "end it with one unit: `dense 1 sigmoid` or `conv 1 4x4 sigmoid; flatten`",
            )
        )
    elif final_activation(discriminator.node(discriminator.outputs[-1]).layer) not in (
        "sigmoid",
        None,
    ):
        act = final_activation(discriminator.node(discriminator.outputs[-1]).layer)
        errors.append(
            _pair_error(
                "E523",
                discriminator,
                discriminator.outputs[-1],
                f"a DCGAN discriminator's "
                f"score is a probability (sigmoid) or a logit (no activation), not {act}",
                "use `sigmoid` or no activation on the last layer",
            )
        )
    if tuple(generator.output_shapes[-1]) != tuple(discriminator.input_shape):
        errors.append(
            _pair_error(
                "E524",
                generator,
                generator.outputs[-1],
                f"the generator makes "
                f"{_shape(generator.output_shapes[-1])} images but the discriminator reads "
                f"{_shape(discriminator.input_shape)}",
                "give both specs the same image shape",
            )
        )
    if errors:
        raise SpecErrors(errors)


def _pair_error(code: str, model: Model, node: str, message: str, hint: str) -> SpecError:
    span = model.node(node).span
    where = Span(span.line, span.column, span.end_line, span.end_column) if span else None
    return SpecError(code, message, where, hint=hint, path=model.source)


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


def _shapes(shapes) -> str:
    return ", ".join(_shape(s) for s in shapes)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " ".join(lines[:2])[:300]


def train_vae(
    encoder: Model,
    decoder: Model,
    dataset,
    out: str | Path,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    val_split: float = 0.1,
    judge: bool = True,
    resume: bool = False,
    log=print,
) -> dict:
    from ..backends.torch import build
    from ..data import batches
    from .judge import train_judge

    check_vae(encoder, decoder)
    out = Path(out)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    enc = build(encoder)
    dec_ir, act = strip_final(decoder)
    dec = build(dec_ir)
    logits = act == "sigmoid"
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=lr)
    train, val = dataset.split(val_split, seed)
    latent = decoder.input_shape
    gen = torch.Generator().manual_seed(seed)
    fixed = _latent(64, latent, gen)  # the grid in samples.png
    probe = _latent(JUDGED, latent, gen)  # what the judge reads each epoch
    referee = train_judge(dataset, seed) if judge else None

    def sample(z: torch.Tensor) -> torch.Tensor:
        """Decoded prior samples z ~ N(0, I), as Bernoulli means in [0, 1]."""
        dec.eval()
        with torch.no_grad():
            images = dec(z)
        return torch.sigmoid(images) if logits else images

    nets, opts = {"encoder": enc, "decoder": dec}, {"adam": opt}
    state = _resume(out, nets, opts, gen, epochs, log) if resume else None
    untrained = state["untrained"] if state else _judged(referee, lambda: sample(probe))

    def step(batch, learn: bool) -> dict:
        x = _nchw(batch["x"])
        mean, logvar = enc(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if learn else mean
        recon = dec(z.reshape(len(z), latent[-1], *latent[:-1]) if len(latent) == 3 else z)
        bce = (
            F.binary_cross_entropy_with_logits(recon, x, reduction="none")
            if logits
            else F.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), x, reduction="none")
        )
        rec = bce.flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum(1)).mean()
        loss = rec + kl
        if learn:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return {
            "loss": float(loss.detach()),
            "reconstruction": float(rec.detach()),
            "kl": float(kl.detach()),
        }

    history: list[dict] = state["history"] if state else []
    for epoch in range(len(history), epochs):
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
        row.update(_judged(referee, lambda: sample(probe)))
        _end_epoch(out, history, row, epochs, nets, opts, gen, untrained, log)
    save_grid(out / "samples.png", sample(fixed).permute(0, 2, 3, 1).numpy())
    files = [_save(out, "encoder", enc), _save(out, "decoder", dec)]
    result = {
        "task": "generate",
        "model": "vae",
        "backend": "torch",
        "epochs_run": epochs,
        "best_epoch": int(np.argmin([r["val_loss"] for r in history])) + 1,
        "metrics": {
            k.removeprefix("val_"): v
            for k, v in history[-1].items()
            if k.startswith(("val_", "sample_"))
        },
        "first_train_loss": history[0]["train_loss"],
        "samples": "samples.png",
        "weights": files,
        "seconds": round(time.perf_counter() - t0, 2),
        "n_train": len(train),
        "n_val": len(val),
    }
    _finish(out, history, result, "VAE", referee, untrained)
    return result


def dcgan_init(net) -> None:
    """Radford et al. 2015, section 4: "All weights were initialized from a zero-centered
    Normal distribution with standard deviation 0.02" (batch-norm scales around 1, as the
    PyTorch DCGAN tutorial's weights_init)."""
    from torch import nn

    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _generate(g, z: torch.Tensor) -> torch.Tensor:
    """Samples in [0, 1] (NCHW) from the generator in inference mode (batch norm with its
    running statistics), leaving it in the mode it was in."""
    mode = g.training
    g.eval()
    with torch.no_grad():
        images = (g(z) + 1) / 2
    g.train(mode)
    return images


def _judged(judge, make_images) -> dict:
    """The judge's scores of make_images(), as sample_* metrics ({} without a judge)."""
    if judge is None:
        return {}
    return {f"sample_{k}": v for k, v in judge.score(make_images()).items()}


def train_gan(
    generator: Model,
    discriminator: Model,
    dataset,
    out: str | Path,
    epochs: int = GAN_EPOCHS,
    batch_size: int = 64,
    seed: int = 0,
    max_batches: int | None = None,
    lr: float = 2e-4,
    beta1: float = 0.5,
    judge: bool = True,
    resume: bool = False,
    log=print,
) -> dict:
    from ..backends.torch import build
    from ..data import batches
    from .judge import train_judge

    check_gan(generator, discriminator)
    out = Path(out)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    g = build(generator)
    d_ir, act = strip_final(discriminator)
    d = build(d_ir)
    dcgan_init(g)
    dcgan_init(d)
    logits = act == "sigmoid"
    opt_g = torch.optim.Adam(g.parameters(), lr=lr, betas=(beta1, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=lr, betas=(beta1, 0.999))
    latent = generator.input_shape
    gen = torch.Generator().manual_seed(seed)
    fixed = _latent(64, latent, gen)  # the grid in samples.png
    probe = _latent(JUDGED, latent, gen)  # what the judge reads each epoch
    referee = train_judge(dataset, seed) if judge else None
    nets, opts = {"generator": g, "discriminator": d}, {"generator": opt_g, "discriminator": opt_d}
    state = _resume(out, nets, opts, gen, epochs, log) if resume else None
    untrained = state["untrained"] if state else _judged(referee, lambda: _generate(g, probe))

    def bce(score, label: float):
        target = torch.full_like(score, label)
        return (
            F.binary_cross_entropy_with_logits(score, target)
            if logits
            else F.binary_cross_entropy(score.clamp(1e-6, 1 - 1e-6), target)
        )

    prob = torch.sigmoid if logits else (lambda t: t)
    history: list[dict] = state["history"] if state else []
    for epoch in range(len(history), epochs):
        sums, n = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0}, 0
        for i, batch in enumerate(batches(dataset, batch_size, seed=seed, epoch=epoch)):
            if max_batches is not None and i >= max_batches:
                break
            real = _nchw(batch["x"]) * 2 - 1  # [0, 1] -> [-1, 1], as tanh
            fake = g(_latent(len(real), latent, gen))
            s_real, s_fake = d(real), d(fake.detach())
            loss_d = bce(s_real, 1.0) + bce(s_fake, 0.0)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            loss_g = bce(d(fake), 1.0)  # non-saturating generator loss
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            k = len(real)
            for key, v in (
                ("loss_d", loss_d),
                ("loss_g", loss_g),
                ("d_real", prob(s_real.detach()).mean()),
                ("d_fake", prob(s_fake.detach()).mean()),
            ):
                sums[key] += float(v.detach()) * k
            n += k
        row = {
            "epoch": epoch + 1,
            **{f"train_{k}": v / max(n, 1) for k, v in sums.items()},
            **_judged(referee, lambda: _generate(g, probe)),
        }
        _end_epoch(out, history, row, epochs, nets, opts, gen, untrained, log)
    save_grid(out / "samples.png", _generate(g, fixed).permute(0, 2, 3, 1).numpy())
    files = [_save(out, "generator", g), _save(out, "discriminator", d)]
    last = history[-1] if history else {}
    result = {
        "task": "generate",
        "model": "gan",
        "backend": "torch",
        "epochs_run": epochs,
        "best_epoch": epochs,
        "metrics": {k.removeprefix("train_"): v for k, v in last.items() if k != "epoch"},
        "samples": "samples.png",
        "weights": files,
        "seconds": round(time.perf_counter() - t0, 2),
        "n_train": len(dataset),
        "optimizer": {"name": "adam", "lr": lr, "beta1": beta1},
    }
    _finish(out, history, result, "DCGAN", referee, untrained)
    return result


def _unprefixed(scores: dict) -> dict:
    return {k.removeprefix("sample_"): v for k, v in scores.items()}
