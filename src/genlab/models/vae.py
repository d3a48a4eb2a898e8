"""Variational autoencoder (Kingma & Welling 2014): networks, loss and sampler in one place.

An encoder maps an image x to a Gaussian q(z|x) = N(mu, diag(sigma^2)) over a small latent
space; a decoder maps a latent z to Bernoulli pixel probabilities p(x|z). Training maximises
the evidence lower bound (ELBO) on log p(x); generating decodes z ~ N(0, I).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.transforms import binarize, flatten
from genlab.errors import GenlabError
from genlab.models.base import (
    Batch, DataSpec, GenerativeModel, PredictionPass, Stage, example_pixel, format_number, format_pixel, format_values,
)

ARCHITECTURES = ("mlp", "conv")
# Adam learning rates tuned on mnist-5k (20 epochs, batch 64): the conv net wants a smaller step
# (test loss 110.5 at 1e-3 against 119.2 at 2e-3); the MLP beats the classic 1e-3 with 2e-3.
DEFAULT_LR = {"mlp": 2e-3, "conv": 1e-3}


@dataclass
class VAEConfig:
    """Everything needed to rebuild a VAE (saved in run.json)."""

    arch: str = "mlp"  # "mlp": 784-400-20 as in the classic example; "conv": two strided convs
    latent_dim: int = 20
    hidden_dim: int = 400  # mlp: hidden width; conv: width of the dense layer
    conv_channels: int = 32  # conv: channels of the first conv layer (the second has twice)
    conditional: bool = False  # CVAE: the one-hot label goes into encoder and decoder
    binarize: bool = False  # train on dynamically binarized pixels (binarized-MNIST protocol)
    lr: float | None = None  # Adam step; None: DEFAULT_LR of the arch (resolved, so run.json holds it)
    iw_samples: int = 100  # importance samples k for log_likelihood (IWAE bound)
    train_samples: int = 1  # importance samples in the training objective: 1 is the ELBO, k > 1 the IWAE bound

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise GenlabError(f"unknown VAE arch {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.arch]
        for name in ("latent_dim", "hidden_dim", "conv_channels", "iw_samples", "train_samples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise GenlabError(f"VAE setting {name} must be a positive integer, got {getattr(self, name)!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise GenlabError(f"VAE setting lr must be a positive number, got {self.lr!r}")


class MLPCoder(nn.Module):
    """MLP encoder and decoder: D -> hidden -> (mu, logvar); latent -> hidden -> D logits."""

    def __init__(self, config: VAEConfig, data: DataSpec):
        super().__init__()
        d, k = data.num_pixels, data.num_classes if config.conditional else 0
        self.image_shape = data.image_shape
        self.encoder = nn.Sequential(nn.Linear(d + k, config.hidden_dim), nn.ReLU())
        self.to_mean = nn.Linear(config.hidden_dim, config.latent_dim)
        self.to_logvar = nn.Linear(config.hidden_dim, config.latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim + k, config.hidden_dim), nn.ReLU(), nn.Linear(config.hidden_dim, d)
        )

    def encode(self, x: torch.Tensor, onehot: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h = flatten(x)  # (B, D)
        if onehot is not None:
            h = torch.cat([h, onehot], dim=1)
        h = self.encoder(h)  # (B, hidden)
        return self.to_mean(h), self.to_logvar(h)

    def decode_logits(self, z: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        if onehot is not None:
            z = torch.cat([z, onehot], dim=1)
        return self.decoder(z).reshape(-1, *self.image_shape)  # (B, C, H, W)


class ConvCoder(nn.Module):
    """Two stride-2 convolutions down (H/4 x W/4), a dense layer, and the mirror image up."""

    def __init__(self, config: VAEConfig, data: DataSpec):
        super().__init__()
        c, h, w = data.image_shape
        if h % 4 or w % 4:
            raise GenlabError(
                f"the conv VAE needs height and width divisible by 4, got {h}x{w}; use --arch mlp or --size"
            )
        k = data.num_classes if config.conditional else 0
        c1, c2 = config.conv_channels, 2 * config.conv_channels
        self.feature_shape = (c2, h // 4, w // 4)
        features = c2 * (h // 4) * (w // 4)
        self.encoder = nn.Sequential(
            nn.Conv2d(c, c1, 4, 2, 1), nn.ReLU(),  # (B, c1, H/2, W/2)
            nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(),  # (B, c2, H/4, W/4)
            nn.Flatten(),
        )
        self.dense = nn.Sequential(nn.Linear(features + k, config.hidden_dim), nn.ReLU())
        self.to_mean = nn.Linear(config.hidden_dim, config.latent_dim)
        self.to_logvar = nn.Linear(config.hidden_dim, config.latent_dim)
        self.from_latent = nn.Sequential(
            nn.Linear(config.latent_dim + k, config.hidden_dim), nn.ReLU(),
            nn.Linear(config.hidden_dim, features), nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(),  # (B, c1, H/2, W/2)
            nn.ConvTranspose2d(c1, c, 4, 2, 1),  # (B, C, H, W) logits
        )

    def encode(self, x: torch.Tensor, onehot: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (B, c2*H/4*W/4)
        if onehot is not None:
            h = torch.cat([h, onehot], dim=1)
        h = self.dense(h)
        return self.to_mean(h), self.to_logvar(h)

    def decode_logits(self, z: torch.Tensor, onehot: torch.Tensor | None) -> torch.Tensor:
        if onehot is not None:
            z = torch.cat([z, onehot], dim=1)
        h = self.from_latent(z).reshape(-1, *self.feature_shape)
        return self.decoder(h)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag(exp(logvar))) summed over the last dimension."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mean) ** 2 / logvar.exp()).sum(-1)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) of pixels x in [0, 1] under Bernoulli(sigmoid(logits)), summed per image: (B,)."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def negative_elbo(logits, x, mean, logvar) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image negative ELBO in nats and its KL term, both (B,).

    -ELBO = -E_q[log p(x|z)] + KL(q(z|x) || N(0, I)), with the KL in closed form
    (Kingma & Welling 2014, Appendix B): -1/2 * sum(1 + logvar - mean^2 - exp(logvar)).
    """
    kl = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum(1)
    return -bernoulli_log_likelihood(logits, x) + kl, kl


class VAE(GenerativeModel):
    """Bernoulli-decoder VAE, MLP or convolutional, optionally class-conditional."""

    family = "vae"
    config_class = VAEConfig
    default_batch_size = 64
    trace_columns = (("loss", "Loss"), ("test_loss", "Test loss"), ("recon_accuracy", "Recon. accuracy"))
    monitor = "test_loss"
    idea = (
        "An encoder maps each image to a Gaussian over a small latent space and a decoder maps a latent back to "
        "pixel probabilities; training maximises the evidence lower bound (ELBO) on log p(x), a reconstruction "
        "term minus a KL term that keeps the encodings near the prior N(0, I). New images are the decoder's "
        "output for latents drawn from that prior."
    )

    def __init__(self, config: VAEConfig, data: DataSpec):
        super().__init__(config, data)
        if config.conditional and data.num_classes < 2:
            raise GenlabError("a conditional VAE needs labelled data with at least 2 classes")
        self.coder = (MLPCoder if config.arch == "mlp" else ConvCoder)(config, data)

    def _onehot(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if labels is None:
            raise GenlabError("a conditional VAE needs labels")
        return F.one_hot(labels.to(self.device), self.data.num_classes).to(torch.float32)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters of q(z|x): mean and log-variance, each (B, latent_dim)."""
        return self.coder.encode(x.to(self.device), self._onehot(labels))

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Bernoulli means p(x|z) as images (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.coder.decode_logits(z.to(self.device), self._onehot(labels)))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        """Decoder logits for a reparameterized z ~ q(z|x), plus q's mean and log-variance."""
        onehot = self._onehot(labels)
        mean, logvar = self.coder.encode(x, onehot)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()  # reparameterization trick
        return self.coder.decode_logits(z, onehot), mean, logvar

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the mean of q(z|x): the model's deterministic reconstruction, in [0, 1]."""
        mean, _ = self.encode(x, labels)
        return self.decode(mean, labels)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.randn(n, self.config.latent_dim, generator=generator)

    @torch.no_grad()
    def sample(self, n, generator=None, labels=None) -> torch.Tensor:
        """Decode n draws of z ~ N(0, I): Bernoulli means (n, C, H, W) in [0, 1]."""
        labels = self.check_labels(n, labels)
        return self.decode(self.sample_latent(n, generator), labels)

    def configure_optimizers(self):
        return {"model": self.adam(self.parameters(), lr=self.config.lr)}

    def compile_targets(self) -> list[nn.Module]:
        return [self.coder.encoder, self.coder.decoder]  # the step calls the coder's methods, not its forward

    def training_step(self, batch: Batch, optimizers) -> dict[str, float]:
        x, labels = batch
        if self.config.binarize:
            x = binarize(x)
        if self.config.train_samples > 1:  # IWAE (Burda et al. 2016): the k-sample bound, tighter than the ELBO
            mean, logvar, log_weights = self.importance_log_weights(x, labels, self.config.train_samples)
            loss = -(torch.logsumexp(log_weights, dim=0) - math.log(self.config.train_samples)).mean()
            kl = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum(1)  # of q, reported as for the ELBO
        else:
            logits, mean, logvar = self(x, labels)
            loss_per_image, kl = negative_elbo(logits, x, mean, logvar)
            loss = loss_per_image.mean()
        optimizer = optimizers["model"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value, kl_value = torch.stack([loss.detach(), kl.detach().mean()]).tolist()  # one device sync
        return {"loss": loss_value, "kl": kl_value}

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        x, labels = batch
        if self.config.binarize:
            x = binarize(x)
        logits, mean, logvar = self(x, labels)
        loss_per_image, _ = negative_elbo(logits, x, mean, logvar)
        reconstruction = self.reconstruct(x, labels)
        recon_accuracy = ((reconstruction > 0.5) == (x > 0.5)).float().mean()
        return {"test_loss": loss_per_image.mean().item(), "recon_accuracy": recon_accuracy.item()}

    @property
    def likelihood_kind(self) -> str:
        """How `log_likelihood` relates to log p(x), for tables that put families side by side."""
        return f"bound: importance-weighted (Burda et al. 2016), k = {self.config.iw_samples}"

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, labels: torch.Tensor | None = None, k: int | None = None) -> torch.Tensor:
        """Importance-weighted lower bound on log p(x) in nats per image, (B,) (Burda et al. 2016, eq. 8).

        log p(x) >= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x); k = 1 is the ELBO
        and the bound tightens as k grows. p(x|z) is the Bernoulli decoder, so this is a
        likelihood in the strict sense for binary pixels.
        """
        k = k or self.config.iw_samples
        _, _, log_weights = self.importance_log_weights(x, labels, k)
        return torch.logsumexp(log_weights, dim=0) - math.log(k)

    def importance_log_weights(self, x: torch.Tensor, labels: torch.Tensor | None, k: int):
        """q's mean and log-variance (B, latent) and log p(x, z_i) - log q(z_i|x) for k draws z_i ~ q(z|x): (k, B)."""
        x = x.to(self.device)
        onehot = self._onehot(labels)
        mean, logvar = self.coder.encode(x, onehot)
        std = (0.5 * logvar).exp()
        zeros = torch.zeros_like(mean)  # the prior N(0, I): mean 0, log-variance 0
        log_weights = []
        for _ in range(k):  # one importance sample per pass keeps memory at one batch
            z = mean + torch.randn_like(mean) * std  # (B, latent)
            log_p_x_given_z = bernoulli_log_likelihood(self.coder.decode_logits(z, onehot), x)
            log_p_z = gaussian_log_density(z, zeros, zeros)
            log_q_z = gaussian_log_density(z, mean, logvar)
            log_weights.append(log_p_x_given_z + log_p_z - log_q_z)
        return mean, logvar, torch.stack(log_weights)

    # ---------------------------------------------------------------- explain

    def pipeline_stages(self, x: torch.Tensor, labels: torch.Tensor | None,
                        generator: torch.Generator) -> list[Stage]:
        """Encode, sample z, decode, -ELBO on the real batch x (B, C, H, W) in [0, 1]; then z ~ N(0, I) -> image."""
        pixel = example_pixel(x)
        onehot = self._onehot(labels)
        label_note = " with the one-hot label joined" if onehot is not None else ""
        stages = []
        if self.config.binarize:
            binary = binarize(x, generator)
            stages.append(Stage.measured(
                "binarize", "each pixel becomes 1 with probability equal to its intensity (dynamic binarization)",
                x, binary, f"pixel {pixel} {format_number(x[pixel])} becomes {format_number(binary[pixel])}",
            ))
            x = binary
        encoder_input = x
        if self.config.arch == "mlp":
            encoder_input = flatten(x)  # (B, D)
            feature = (pixel[1] * self.data.height + pixel[2]) * self.data.width + pixel[3]
            stages.append(Stage.measured(
                "flatten", "each image becomes one vector of C*H*W pixel values, the MLP's input", x, encoder_input,
                f"pixel {pixel} is feature (0, {feature}) = {format_number(encoder_input[0, feature])}",
            ))
        mean, logvar = self.coder.encode(x, onehot)  # (B, latent) each
        stages.append(Stage.measured(
            "encode", f"the encoder network{label_note} gives q(z|x) = N(mean, exp(log-variance)) per image",
            encoder_input, mean,
            f"mean[0, :3] = {format_values(mean[0, :3])}, log-variance[0, :3] = {format_values(logvar[0, :3])}",
        ))
        noise = self.randn(*mean.shape, generator=generator)
        z = mean + noise * (0.5 * logvar).exp()  # the reparameterization trick, as in `forward`
        stages.append(Stage.measured(
            "sample z",
            "z = mean + exp(log-variance / 2) * eps, eps ~ N(0, I): a draw from q(z|x) that gradients flow through",
            mean, z, f"z[0, :3] = {format_values(z[0, :3])} with eps[0, :3] = {format_values(noise[0, :3])}",
        ))
        logits = self.coder.decode_logits(z, onehot)  # (B, C, H, W)
        stages.append(Stage.measured(
            "decode", f"the decoder network{label_note} gives each pixel's Bernoulli logit", z, logits,
            f"pixel {pixel} logit {format_number(logits[pixel])}, so p(pixel on) = "
            f"{format_number(torch.sigmoid(logits[pixel]))} (the data says {format_number(x[pixel])})",
        ))
        loss, kl = negative_elbo(logits, x, mean, logvar)  # (B,) each
        iwae = f"; training uses the k = {self.config.train_samples} IWAE bound" if self.config.train_samples > 1 else ""
        stages.append(Stage.measured(
            "loss", "negative ELBO per image: Bernoulli reconstruction cross-entropy + KL(q(z|x) || N(0, I))",
            logits, loss,
            f"{format_number(loss.mean())} nats per image on this batch = reconstruction "
            f"{format_number((loss - kl).mean())} + KL {format_number(kl.mean())}{iwae}",
        ))
        prior = self.sample_latent(len(x), generator)  # (B, latent)
        stages.append(Stage.measured(
            "sample latent", "draw z from the prior N(0, I)", None, prior, f"z[0, :3] = {format_values(prior[0, :3])}",
            path="generation",
        ))
        images = self.decode(prior, self.check_labels(len(x), None))
        stages.append(Stage.measured(
            "decode", "the decoder, then a sigmoid: each pixel's Bernoulli mean, the image in [0, 1]", prior, images,
            format_pixel(images, pixel),
            path="generation",
        ))
        return stages

    def prediction_pass(self, x: torch.Tensor, labels: torch.Tensor | None,
                        generator: torch.Generator) -> PredictionPass:
        """The decoder's layers (and the conv VAE's dense layers before them) on z ~ N(0, I)."""
        z = self.sample_latent(len(x), generator)  # (B, latent)
        labels = self.check_labels(len(x), None)
        parts = ("from_latent", "decoder")  # the modules that decode_logits runs, in order
        decoder = nn.ModuleDict({name: module for name, module in self.coder.named_children() if name in parts})
        return PredictionPass(
            "decoder", decoder, "latent z ~ N(0, I)", z, lambda: self.decode(z, labels),
            "image = sigmoid(logits)", f"the decoder on {len(z)} latents z ~ N(0, I), as `sample` draws images",
        )
