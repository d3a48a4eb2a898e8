"""Generative adversarial networks: the classic MLP GAN, DCGAN and WGAN-GP, optionally conditional.

Training is a contest. A generator G maps noise z ~ N(0, I) to an image; a discriminator D
scores images as real or generated. D learns to tell them apart, G learns to fool D
(Goodfellow et al. 2014). Three variants share one loop and one set of numbers:

- `gan`: MLP generator and discriminator, the non-saturating loss (G maximises log D(G(z))).
- `dcgan`: convolutional G (transposed convolutions) and D (strided convolutions), sized from
  the data (Radford et al. 2016); an unconditional model's D is spectrally normalised by default (Miyato
  et al. 2018), a conditional one's keeps the paper's BatchNorm (`spectral_norm` sets either).
- `wgan-gp`: a critic without normalisation layers trained to estimate the Wasserstein
  distance, with a gradient penalty of weight 10 and 2 critic steps per generator step
  (Gulrajani et al. 2017 use 5).

Conditional variants embed the class into G (the embedding concatenated to z, or for the
convolutional G per-class BatchNorm scales and shifts) and condition D by projection (Miyato &
Koyama 2018: D(x, y) = psi(phi(x)) + <embed(y), sum over positions of phi(x)>) or by concatenating
a one-hot label to D's input (Mirza & Osindero 2014). On little data a conditional G tends to
draw one image per class and ignore z ("collapse by conditioning", Shahbazi et al. 2022): the
label fades in over `condition_ramp` steps, and `mode_seeking` adds Mao et al.'s (2019) term
that rewards different images for different z of one label. `class_loss` gives D an auxiliary
classifier (AC-GAN, Odena et al. 2017) whose cross-entropy teaches G to draw images of the asked
class; the convolutional D's reads its last maps averaged over positions, the WGAN-GP critic's all
of them flattened (`classifier_features`). Images are scaled to [-1, 1] inside the family (G ends
in tanh); `sample` returns [0, 1] like every family.

Modules: `config` (the dataclasses), `networks` (G, D and their builders), `losses`, `model`
(the GenerativeModel classes and their training steps), `explain` (the family's explain stages).
"""

from genlab.models.gan.config import CONDITIONING, GENERATOR_CONDITIONING, DCGANConfig, GANConfig, WGANGPConfig
from genlab.models.gan.losses import gradient_penalty, mean_pairwise_distance, mode_seeking_loss
from genlab.models.gan.model import DCGAN, GAN, WGANGP
from genlab.models.gan.networks import (
    LEAK,
    ClassBatchNorm2d,
    ConvGenerator,
    Discriminator,
    MLPGenerator,
    concat_labels,
    conv_discriminator,
    conv_stages,
    dcgan_init,
    mlp_discriminator,
)

__all__ = [
    "CONDITIONING",
    "DCGAN",
    "GAN",
    "GENERATOR_CONDITIONING",
    "LEAK",
    "WGANGP",
    "ClassBatchNorm2d",
    "ConvGenerator",
    "DCGANConfig",
    "Discriminator",
    "GANConfig",
    "MLPGenerator",
    "WGANGPConfig",
    "concat_labels",
    "conv_discriminator",
    "conv_stages",
    "dcgan_init",
    "gradient_penalty",
    "mean_pairwise_distance",
    "mlp_discriminator",
    "mode_seeking_loss",
]
