"""The GAN family's configs: one dataclass per variant, each saved in run.json and enough to rebuild it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from genlab.errors import GenlabError
from genlab.models.common import check_bool, check_choice, check_int, check_number
from genlab.models.gan.augment import AUGMENTATIONS

LR_SCHEDULES = ("constant", "linear")  # the learning rate over training: kept, or falling linearly to 0
CONDITIONING = ("projection", "concat")  # how D sees the label
GENERATOR_CONDITIONING = ("input", "batchnorm")  # how the convolutional G does
# What the convolutional D's auxiliary classifier reads: its last feature maps averaged over positions (B, C), or
# all of them flattened (B, C*h*w), where the layout of the image is kept.
CLASSIFIER_FEATURES = ("pooled", "flattened")


@dataclass
class GANConfig:
    """Everything needed to rebuild a GAN (saved in run.json)."""

    title: ClassVar[str] = "GAN"  # the variant's name in error messages

    latent_dim: int = 100  # z ~ N(0, I) of this size
    conditional: bool = False  # class-conditional G and D
    conditioning: str = "projection"  # how D sees the label: "projection" or "concat"
    lr: float = 2e-4  # Adam step of both networks (of G alone when d_lr is given)
    d_lr: float | None = None  # Adam step of D (the two time-scale rule, Heusel et al. 2017); None: lr
    # "linear": both learning rates fall linearly from lr (d_lr) at the first D step to 0 at decay_steps, as
    # WGAN-GP's own CIFAR-10 models train (Gulrajani et al. 2017); "constant": kept.
    lr_schedule: str = "constant"
    decay_steps: int | None = None  # D steps of the linear schedule; None: the run's planned steps, set when it starts
    beta1: float = 0.5  # Adam betas (0.5, 0.999), as DCGAN
    beta2: float = 0.999
    # Decay of an exponential moving average of G's weights, sampled from (0: none). On by default: the MLP GAN
    # on mnist-5k reached FID 36.3 after 250 epochs with it, against 55.6 after 200 without (time to quality).
    ema: float = 0.999
    # Conditional models: the label's weight in G and D grows linearly from 0 at step start to 1 at
    # step end (D steps): unconditional first, so G learns to use z before the label can replace it.
    condition_ramp: tuple[int, int] = (300, 2000)
    # Conditional G: weight of the mode-seeking term (Mao et al. 2019) in its loss; 0: off. Off for the MLP GAN, where
    # the label ramp and the auxiliary classifier keep each class varied: at the default budgets (seed 0) fashion-mnist
    # labels 90.3% of its samples right at FID 70.6 (recall 0.10) without it, 87.2% at 78.1 (0.11) at 0.5 and 75.1%
    # at 102.4 at 2, where the term outweighed the adversarial one and spread each class past its images; mnist-5k
    # 99.5% at 16.9 (recall 0.42) against 98.1% at 19.7 (0.48) and 95.0% at 39.7. The convolutional variants keep 2.
    mode_seeking: float = 0.0
    # Conditional models: weight of an auxiliary classifier on D's features (AC-GAN, Odena et al. 2017), its
    # cross-entropy on real images added to D's loss and on generated ones to G's; 0: off. Faded in with the label.
    # 1 for the MLP GAN: at 10 the class term outweighed the adversarial one and spread the samples (mnist-5k,
    # default budget: 92.1% of labels right at FID 59.5, against 95.0% at 39.7 with 1; fashion-mnist 64.2% at
    # 158.5 against 72.3% at 108.2). The convolutional variants keep 10 (below).
    class_loss: float = 1.0
    # Differentiable augmentation of D's inputs, real and generated alike (DiffAugment, Zhao et al. 2020): any of
    # AUGMENTATIONS, applied in this order before every D call; (): none.
    augment: tuple[str, ...] = ()
    # Dropout after each of D's activations: D cannot learn the training images by heart, and G keeps improving.
    # 0.3 for the MLP GAN (mnist-5k, 325 epochs: FID 26.2 and falling, against 36 at best without, which rose
    # again past 275 epochs); 0 for the convolutional variants (not measured there).
    dropout: float = 0.3
    # Sampling only (training draws z ~ N(0, I) whatever this is): z ~ N(0, truncation² I), the truncation trick
    # in StyleGAN's form (Karras et al. 2019, psi, about a mean latent of 0). Below 1, samples more typical of
    # their class and less varied: the conditional DCGAN on fashion-mnist (29 epochs, 1,000 samples) labelled
    # 93.5% right at 1 (FID 50.6), 97.0% at 0.8 (FID 54.7), 98.9% at 0.6 (FID 66.1). 1: off.
    truncation: float = 1.0
    # Weight gamma of the R1 penalty, gamma / 2 * E||grad D(x_real)||^2, added to D's loss (Mescheder et al. 2018);
    # 0: off. Not for WGAN-GP, whose critic has its gradient penalty.
    r1: float = 0.0
    # R1 every this many D steps, weighted by it (lazy regularization, Karras et al. 2020): its double backward
    # costs about 0.7 of a step, so every 4th step keeps most of its effect for a fraction of its time.
    r1_every: int = 4

    def __post_init__(self) -> None:
        title = self.title
        check_choice(title, "conditioning", self.conditioning, CONDITIONING)
        check_choice(title, "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.decay_steps is not None:
            check_int(title, "decay_steps", self.decay_steps)
        check_int(title, "latent_dim", self.latent_dim)
        check_bool(title, "conditional", self.conditional)
        check_number(title, "lr", self.lr, above=0, what="a positive number")
        if self.d_lr is not None:
            check_number(title, "d_lr", self.d_lr, above=0, what="a positive number (or None: lr)")
        check_number(title, "r1", self.r1, 0.0, what="a number >= 0 (0: off)")
        check_int(title, "r1_every", self.r1_every)
        for name, value in (("beta1", self.beta1), ("beta2", self.beta2)):
            check_number(title, name, value, 0.0, below=1.0, what="in [0, 1)")
        check_number(title, "ema", self.ema, 0.0, below=1.0, what="in [0, 1) (0: off; 0.999 is typical)")
        for name, value in (("mode_seeking", self.mode_seeking), ("class_loss", self.class_loss)):
            check_number(title, name, value, 0.0, what="a number >= 0 (0: off)")
        ramp = tuple(self.condition_ramp)  # a list when read back from run.json
        steps_ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ramp)
        if len(ramp) != 2 or not steps_ok or ramp[0] > ramp[1]:
            raise GenlabError(f"condition_ramp must be two steps 0 <= start <= end, got {self.condition_ramp!r}")
        self.condition_ramp = (ramp[0], ramp[1])
        check_number(title, "dropout", self.dropout, 0.0, below=1.0, what="in [0, 1) (0: off)")
        check_number(title, "truncation", self.truncation, 0.0, what="a number >= 0 (1: off; 0.7 is typical)")
        self.augment = tuple(self.augment)  # a list when read back from run.json
        for name in self.augment:
            check_choice(title, "augment", name, AUGMENTATIONS)


@dataclass
class DCGANConfig(GANConfig):
    title: ClassVar[str] = "DCGAN"

    # Width of D's first conv and G's last hidden layer; doubled per resolution step. 32: at 28x28 a step costs
    # about a fifth of 64's on the CPU for the same FID per epoch, so a time budget goes much further.
    channels: int = 32
    dropout: float = 0.0
    # 10: with it, condition_ramp and mode_seeking, and --ema 0.999, the conditional DCGAN met both the
    # label-accuracy target and a fashion-mnist FID below the plain loop's (benchmarks/README.md has the figures);
    # without the classifier label accuracy stayed near 0.76.
    class_loss: float = 10.0
    mode_seeking: float = 2.0  # the setting the conditional DCGAN met its targets with (above)
    # Spectral normalisation on every D layer, instead of BatchNorm (Miyato et al. 2018). None: off (BatchNorm).
    # For an unconditional model it beat a plain BatchNorm D (mnist-5k at 200 epochs: FID 40.8 against 51.5) until
    # R1 (below) joined BatchNorm: FID 20.1 at the default 240 epochs against spectral normalisation's 35.8. For a
    # conditional one BatchNorm gave FID 17.3 and 98.7% of samples read as their label, against 96.5 and 72.3%
    # spectrally normalised. Resolved, so run.json holds it.
    spectral_norm: bool | None = None
    # None: 1 for an unconditional model (with BatchNorm's D: mnist-5k, 240 epochs, FID 20.1 against 35.8
    # without), 0 for a conditional one (not measured there). Resolved, so run.json holds it.
    r1: float | None = None  # type: ignore[assignment]
    generator_conditioning: str = "input"  # conditional G: class embedding joined to z ("input") or per-class BatchNorm
    # Conditional models with class_loss: what D's auxiliary classifier reads (CLASSIFIER_FEATURES). "pooled": the
    # conditional DCGAN labels 98.7% of its samples right with it (mnist-5k, benchmarks/README.md).
    classifier_features: str = "pooled"

    def __post_init__(self) -> None:
        if self.r1 is None:
            self.r1 = 0.0 if self.conditional else 1.0
        super().__post_init__()
        check_int(self.title, "channels", self.channels)
        if self.spectral_norm is None:
            self.spectral_norm = False
        check_bool(self.title, "spectral_norm", self.spectral_norm)
        check_choice(self.title, "generator_conditioning", self.generator_conditioning, GENERATOR_CONDITIONING)
        check_choice(self.title, "classifier_features", self.classifier_features, CLASSIFIER_FEATURES)


@dataclass
class WGANGPConfig(DCGANConfig):
    title: ClassVar[str] = "WGAN-GP"

    # Adam(2e-4, betas (0, 0.9)); the paper's 1e-4 learns too slowly for a CPU budget: on mnist-5k FID 46.1 at
    # 200 epochs with 2e-4 (62.3 at 100), against 59.0 with 1e-4 (92 at 105).
    lr: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.9
    gp_weight: float = 10.0  # lambda of the gradient penalty
    r1: float | None = 0.0  # the critic has its gradient penalty
    spectral_norm: bool | None = False  # the critic is constrained by the gradient penalty, not normalised
    # Critic steps per generator step. 1, not the paper's 5: in a CPU budget of ~12,000 critic steps G needs its
    # share. On mnist-5k (1 thread beside another job): FID 848 after 30 epochs at 5 (64 channels); 43.8 after 200
    # at 2 (8.7 min on 2 cores); 38.5 after 190 at 1 in about the same time on one thread, 34.0 with G's DCGAN
    # initialisation (36.2 on 2 threads, 34.0 after 210 epochs there).
    n_critic: int = 1
    # "flattened": the critic's last maps keep where each stroke is. Averaged over positions, its 64 channels of
    # 10x10-pixel patches left the classifier near chance on mnist-5k (cross-entropy 2.20 nats after 20 epochs,
    # against 0.28 flattened). At the default 210 epochs: 92.3% of samples labelled right, FID 41.2, recall 0.57,
    # against 80.9%, 57.1 and 0.18 pooled.
    classifier_features: str = "flattened"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.title, "n_critic", self.n_critic)
        if self.r1:
            raise GenlabError("WGAN-GP's critic has its gradient penalty (gp_weight): r1 is for gan and dcgan")
        check_number(self.title, "gp_weight", self.gp_weight, 0.0)
