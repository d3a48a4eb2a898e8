"""The VAE family (Kingma & Welling 2014): the ELBO (or the IWAE bound) as the training loss, the
importance-weighted bound as its likelihood, and sampling by decoding z ~ N(0, I)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.transforms import binarize
from genlab.models.base import Batch, CanReconstruct, DataSpec, GenerativeModel, HasEncoder, HasLikelihood
from genlab.models.vae import explain
from genlab.models.vae.config import CONV_FROM_IMAGES, VAEConfig
from genlab.models.vae.losses import (
    bernoulli_log_likelihood,
    gaussian_log_density,
    kl_to_standard_normal,
    negative_elbo,
)
from genlab.models.vae.networks import ConvCoder, MLPCoder, conv_takes
from genlab.models.vae.prior import ClassMixturePrior, MixturePrior


class VAE(GenerativeModel, HasLikelihood, HasEncoder, CanReconstruct):
    """Bernoulli-decoder VAE, MLP or convolutional, optionally class-conditional."""

    family = "vae"
    config_class = VAEConfig
    default_batch_size = 64
    default_steps = 6_300  # 100 epochs of mnist-5k: benchmarks/README.md, time to quality
    # The budget grows the full sqrt(images / 4,000) (fashion-mnist: 3.9x, 26 epochs of the conv net): there the
    # conditional conv VAE went from FID 56.5 and 89.3% of labels right at 2.5x (17 epochs) to 47.9 and 91.4%, the
    # unconditional one from 55.2 to 53.4, in 19.1 min on 2 cores (benchmarks/README.md).
    largest_budget_scale = 4.0
    trace_columns = (("loss", "Loss"), ("test_loss", "Test loss"), ("recon_accuracy", "Recon. accuracy"))
    monitor = "test_loss"
    # Runs written before these settings trained the ELBO (beta 1) and drew from N(0, I).
    absent_in_older_runs = {"prior": "standard", "kl_weight": 1.0}
    explanation = explain  # what `genlab explain` measures: explain.py
    idea = (
        "An encoder maps each image to a Gaussian over a small latent space and a decoder maps a latent back to "
        "pixel probabilities; training maximises the evidence lower bound (ELBO) on log p(x), a reconstruction "
        "term minus a KL term that keeps the encodings near the prior N(0, I). New images are the decoder's "
        "output for latents drawn from that prior, or (the default) from a Gaussian mixture fitted after each "
        "epoch to where the training images' encodings really lie."
    )
    config: VAEConfig

    @classmethod
    def data_defaults(cls, data: DataSpec, images: int) -> dict[str, Any]:
        """The conv net for CONV_FROM_IMAGES or more training images whose sides divide by 4, the MLP below."""
        if images >= CONV_FROM_IMAGES and conv_takes(data.height, data.width):
            return {"arch": "conv"}
        return {}

    def __init__(self, config: VAEConfig, data: DataSpec):
        super().__init__(config, data)
        self.coder = (MLPCoder if config.arch == "mlp" else ConvCoder)(config, data)
        # The ex-post prior (config.prior "mixture", or one per class): refitted at each epoch's end, saved with
        # the weights.
        self.mixture: MixturePrior | ClassMixturePrior | None = None
        if config.prior == "mixture":
            self.mixture = MixturePrior(config.prior_components, config.latent_dim)
        elif config.prior == "class_mixture":
            self.mixture = ClassMixturePrior(data.num_classes, config.prior_components, config.latent_dim)

    @property
    def binary_pixels(self) -> bool:
        return self.config.binarize

    def onehot(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The labels as the coder takes them: one-hot rows (B, K) on the model's device; None when unconditional."""
        labels = self.condition(labels)
        return None if labels is None else F.one_hot(labels, self.data.num_classes).to(torch.float32)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters of q(z|x): mean and log-variance, each (B, latent_dim)."""
        return self.coder.encode(x.to(self.device), self.onehot(labels))

    def latent_of(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The mean of q(z|x), (B, latent_dim): the latent that stands for x."""
        mean, _ = self.encode(x, labels)
        return mean

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Bernoulli means p(x|z) as images (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.coder.decode_logits(z.to(self.device), self.onehot(labels)))

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decoder logits (B, C, H, W) for a reparameterized z ~ q(z|x), plus q's mean and log-variance (B, latent)."""
        onehot = self.onehot(labels)
        mean, logvar = self.coder.encode(x, onehot)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()  # reparameterization trick
        return self.coder.decode_logits(z, onehot), mean, logvar

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the mean of q(z|x): the model's deterministic reconstruction, in [0, 1]."""
        return self.decode(self.latent_of(x, labels), labels)

    def sample_latent(
        self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n draws from the prior, (n, latent_dim): z ~ N(0, I), or the fitted mixture. With one mixture per
        class, each from its label's (labels (n,)), or without labels from a class drawn uniformly for each."""
        if self.mixture is None:
            return self.randn(n, self.config.latent_dim, generator=generator)
        if isinstance(self.mixture, ClassMixturePrior):
            if labels is None:
                device = generator.device if generator is not None else torch.device("cpu")
                labels = torch.randint(self.data.num_classes, (n,), generator=generator, device=device)
            return self.mixture.sample(labels, generator).to(self.device)
        return self.mixture.sample(n, generator).to(self.device)

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1]: the decoder's means for n latents from the prior (a conditional
        model's with one mixture per class: each from its label's)."""
        labels = self.check_labels(n, labels)
        return self.decode(self.sample_latent(n, generator, labels), labels)

    def log_prior(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(z) in nats, (B,) for z (B, latent_dim): the density new latents are drawn from (p(z|y) with one
        mixture per class)."""
        if self.mixture is None:
            zeros = torch.zeros_like(z)
            return gaussian_log_density(z, zeros, zeros)
        if isinstance(self.mixture, ClassMixturePrior):
            given = self.condition(labels)
            assert given is not None
            return self.mixture.log_density(z, given)
        return self.mixture.log_density(z)

    @torch.no_grad()
    def end_epoch(self, batches) -> dict[str, float]:
        """With the mixture prior: refit it to the means of q(z|x) over the training set (seeded by the epoch's
        weights alone, so a resumed run refits the same); record their mean log density under it."""
        if self.mixture is None:
            return {}
        if isinstance(self.mixture, ClassMixturePrior):
            pairs = [(self.latent_of(x, labels), labels) for x, labels in batches]
            latents = torch.cat([latent for latent, _ in pairs])  # (N, latent_dim)
            return {"prior_log_density": self.mixture.fit(latents, torch.cat([labels for _, labels in pairs]))}
        latents = torch.cat([self.latent_of(x, labels) for x, labels in batches])  # (N, latent_dim)
        return {"prior_log_density": self.mixture.fit(latents)}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.adam(self.parameters(), lr=self.config.learning_rate)}

    def compile_targets(self) -> list[nn.Module]:
        return [self.coder.encoder, self.coder.decoder]  # the step calls the coder's methods, not its forward

    def training_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
        x, labels = batch
        if self.config.binarize:
            x = binarize(x)
        if self.config.train_samples > 1:  # IWAE (Burda et al. 2016): the k-sample bound, tighter than the ELBO
            mean, logvar, log_weights = self.importance_log_weights(x, labels, self.config.train_samples)
            loss = -(torch.logsumexp(log_weights, dim=0) - math.log(self.config.train_samples)).mean()
            kl = kl_to_standard_normal(mean, logvar)  # of q, reported as for the ELBO
        else:
            logits, mean, logvar = self(x, labels)
            loss_per_image, kl = negative_elbo(logits, x, mean, logvar)
            loss = (loss_per_image + (self.config.beta - 1) * kl).mean()  # -E[log p(x|z)] + beta * KL
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

    # ---------------------------------------------------------------- the likelihood

    @property
    def likelihood_kind(self) -> str:
        prior = {
            "standard": "",
            "mixture": ", p(z) the fitted mixture prior",
            "class_mixture": ", p(z|y) the fitted mixture prior of the image's class",
        }[str(self.config.prior)]
        return f"bound: importance-weighted (Burda et al. 2016), k = {self.config.iw_samples}{prior}"

    @property
    def likelihood_data_model(self) -> str:
        return "binarized" if self.config.binarize else "unit-interval pixels"

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

    def importance_log_weights(
        self, x: torch.Tensor, labels: torch.Tensor | None, k: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q's mean and log-variance (B, latent) and log p(x, z_i) - log q(z_i|x) for k draws z_i ~ q(z|x): (k, B)."""
        x = x.to(self.device)
        onehot = self.onehot(labels)
        mean, logvar = self.coder.encode(x, onehot)
        std = (0.5 * logvar).exp()
        log_weights = []
        for _ in range(k):  # one importance sample per pass keeps memory at one batch
            z = mean + torch.randn_like(mean) * std  # (B, latent)
            log_p_x_given_z = bernoulli_log_likelihood(self.coder.decode_logits(z, onehot), x)
            log_p_z = self.log_prior(z, labels)
            log_q_z = gaussian_log_density(z, mean, logvar)
            log_weights.append(log_p_x_given_z + log_p_z - log_q_z)
        return mean, logvar, torch.stack(log_weights)
