"""The VAE's settings: everything needed to rebuild the model (saved in run.json)."""

from __future__ import annotations

from dataclasses import dataclass

from genlab.models.common import check_bool, check_choice, check_int, check_number

FAMILY = "VAE"  # the name config errors give
ARCHITECTURES = ("mlp", "conv")
# Adam learning rates tuned on mnist-5k (20 epochs, batch 64): the conv net reaches a lower test loss
# with the smaller step; the MLP beats the classic 1e-3 with 2e-3 (benchmarks/README.md has the figures).
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
        check_choice(FAMILY, "arch", self.arch, ARCHITECTURES)
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
        check_bool(FAMILY, "conditional", self.conditional)
        check_bool(FAMILY, "binarize", self.binarize)
        check_number(FAMILY, "lr", self.lr, above=0, what="a positive number")

    @property
    def learning_rate(self) -> float:
        """`lr` once resolved (never None after __post_init__)."""
        assert self.lr is not None
        return self.lr
