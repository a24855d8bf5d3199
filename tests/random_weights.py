"""Weights that can tell layers apart, for parity tests: a fresh network has batch-norm means
0, variances 1, gammas 1 and betas 0, which would hide a swapped mean and variance or a lost
offset. Shared by the tests that compare cnnspec with torchvision, keras.applications and
itself across frameworks."""

from __future__ import annotations


def randomise_torch(module, seed: int):
    """Random running statistics in every batch norm, and every 1-D parameter (biases, gammas,
    betas) and (C, 1, 1) one (ConvNeXt's layer scales, 1e-6 at first: they would hide the
    whole residual body) moved off its initial value; the module, in eval mode."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in module.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                c = mod.num_features
                mod.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                mod.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            for p in mod.parameters(recurse=False):
                if p.dim() == 1 or (p.dim() == 3 and tuple(p.shape[1:]) == (1, 1)):
                    p.copy_(p + torch.randn(p.shape, generator=g) * 0.2)
    return module.eval()


def randomise_keras_batch_norm(kmodel, rng) -> None:
    """Random gamma, beta and moving statistics in every Keras BatchNormalization, and the
    gamma of every layer scale (ConvNeXt's, 1e-6 at first: it would hide the residual body),
    nested Sequentials included."""
    import keras

    for layer in kmodel._flatten_layers(include_self=False):
        if type(layer).__name__ == "LayerScale":
            for var in layer.weights:
                var.assign(rng.uniform(0.25, 0.75, var.shape).astype("float32"))
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            values = {
                "gamma": rng.uniform(0.5, 1.5, c),
                "beta": rng.normal(0, 0.2, c),
                "moving_mean": rng.normal(0, 0.2, c),
                "moving_variance": rng.uniform(0.5, 2.0, c),
            }
            for var in layer.weights:
                var.assign(values[var.name].astype("float32"))
