"""The VAE's settings: everything needed to rebuild the model (saved in run.json)."""

from __future__ import annotations

from dataclasses import dataclass

from genlab.errors import GenlabError
from genlab.models.common import check_bool, check_choice, check_int, check_number

FAMILY = "VAE"  # the name config errors give
ARCHITECTURES = ("mlp", "conv")
MAX_PRIOR_COMPONENTS = 1000  # each holds a latent_dim x latent_dim covariance; EM is slow well before this
PRIORS = ("standard", "mixture", "class_mixture")
# beta of the default VAE: with the mixture prior it brings mnist-5k's FID from 102 (beta 1) to 37 after 100
# epochs and keeps the test bound within 2 nats of beta 1's (benchmarks/README.md, time to quality).
DEFAULT_KL_WEIGHT = 0.5  # where new latents come from: N(0, I), or a mixture fitted to the encodings
# Adam learning rates tuned on mnist-5k (20 epochs, batch 64): the conv net reaches a lower test loss
# with the smaller step; the MLP beats the classic 1e-3 with 2e-3 (benchmarks/README.md has the figures).
DEFAULT_LR = {"mlp": 2e-3, "conv": 1e-3}
# Trained for a dataset of this many images or more (sides divisible by 4), a VAE defaults to the conv net: on
# fashion-mnist (60,000) at the default budget it reached FID 55.2 against the MLP's 79.6 (the defaults before
# issue 20: 126.7); the MLP stays the default below, where it is quick and good (mnist-5k: FID 37.0 in 4.5 min).
CONV_FROM_IMAGES = 10_000


@dataclass
class VAEConfig:
    """Everything needed to rebuild a VAE (saved in run.json)."""

    # "mlp": 784-400-20 as in the classic example; "conv": two strided convs (the default for a training set of
    # CONV_FROM_IMAGES images or more, `VAE.data_defaults`)
    arch: str = "mlp"
    latent_dim: int = 20
    hidden_dim: int = 400  # mlp: hidden width; conv: width of the dense layer
    conv_channels: int = 32  # conv: channels of the first conv layer (the second has twice)
    conditional: bool = False  # CVAE: the one-hot label goes into encoder and decoder
    binarize: bool = False  # train on dynamically binarized pixels (binarized-MNIST protocol)
    lr: float | None = None  # Adam step; None: DEFAULT_LR of the arch (resolved, so run.json holds it)
    iw_samples: int = 100  # importance samples k for log_likelihood (IWAE bound)
    train_samples: int = 1  # importance samples in the training objective: 1 is the ELBO, k > 1 the IWAE bound
    # beta: the KL term's weight in the training loss (Higgins et al. 2017). 1 is the ELBO; below 1 the
    # decoder draws sharper images and the encodings drift from N(0, I). The test loss and the
    # likelihood stay the true bound whatever beta is.
    # None: DEFAULT_KL_WEIGHT when training the ELBO, 1 under the IWAE bound (train_samples > 1), which has no
    # separate KL term (resolved, so run.json holds it).
    kl_weight: float | None = None
    # Sampling: "standard" draws z ~ N(0, I); "mixture" draws from a Gaussian mixture of prior_components
    # full-covariance components fitted after every epoch to the training images' encodings (Ghosh et al.
    # 2020), which the likelihood bound then uses as p(z); "class_mixture" (conditional models) fits one such
    # mixture per class to that class's encodings and draws z from the label's own, p(z|y). Training is the same
    # in every case. None: class_mixture for a conditional model, else mixture (resolved, so run.json holds it).
    prior: str | None = None
    prior_components: int = 20  # per class with class_mixture

    def __post_init__(self) -> None:
        check_choice(FAMILY, "arch", self.arch, ARCHITECTURES)
        check_bool(FAMILY, "conditional", self.conditional)
        if self.prior is None:
            self.prior = "class_mixture" if self.conditional else "mixture"
        check_choice(FAMILY, "prior", self.prior, PRIORS)
        if self.lr is None:
            self.lr = DEFAULT_LR[self.arch]
        for name, value in (
            ("latent_dim", self.latent_dim),
            ("hidden_dim", self.hidden_dim),
            ("conv_channels", self.conv_channels),
            ("iw_samples", self.iw_samples),
            ("train_samples", self.train_samples),
        ):
            check_int(FAMILY, name, value)
        check_int(FAMILY, "prior_components", self.prior_components, maximum=MAX_PRIOR_COMPONENTS)
        if self.prior == "class_mixture" and not self.conditional:
            raise GenlabError(
                f"{FAMILY} prior class_mixture fits one mixture per class: it needs --conditional (or prior=mixture)"
            )
        check_bool(FAMILY, "binarize", self.binarize)
        check_number(FAMILY, "lr", self.lr, above=0, what="a positive number")
        if self.kl_weight is None:
            self.kl_weight = 1.0 if self.train_samples > 1 else DEFAULT_KL_WEIGHT
        check_number(FAMILY, "kl_weight", self.kl_weight, above=0, what="a positive number (1: the ELBO)")
        if self.train_samples > 1 and self.kl_weight != 1:
            raise GenlabError(
                f"{FAMILY} kl_weight {self.kl_weight} needs train_samples 1: the IWAE bound has no separate KL term"
            )

    @property
    def beta(self) -> float:
        """`kl_weight` once resolved (never None after __post_init__)."""
        assert self.kl_weight is not None
        return self.kl_weight

    @property
    def learning_rate(self) -> float:
        """`lr` once resolved (never None after __post_init__)."""
        assert self.lr is not None
        return self.lr
