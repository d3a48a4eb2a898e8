"""The DDPM family: a UNet noise predictor, the Gaussian diffusion it reverses, and its EMA copy for sampling."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genlab.data.transforms import from_symmetric, to_symmetric
from genlab.errors import GenlabError
from genlab.models.base import (
    Batch,
    DataSpec,
    GenerativeModel,
    HasLatentSpace,
    HasLikelihood,
    HasSamplerOptions,
    SamplerOption,
    ShowsSamplingChain,
)
from genlab.models.common import drop_labels, ema_copy, eval_mode, update_ema
from genlab.models.ddpm import explain
from genlab.models.ddpm.config import DDPMConfig
from genlab.models.ddpm.process import GaussianDiffusion, NetworkFn
from genlab.models.ddpm.samplers import (
    SAMPLER_TITLES,
    SAMPLERS,
    StepListener,
    log_snr_spaced,
    respaced_timesteps,
    run_sampler,
)
from genlab.models.ddpm.unet import UNet


class DDPM(GenerativeModel, HasLikelihood, HasLatentSpace, HasSamplerOptions, ShowsSamplingChain):
    """A UNet noise predictor, the Gaussian diffusion it reverses, and its EMA copy for sampling."""

    family = "ddpm"
    config_class = DDPMConfig
    # Batches of 64 and 1,500 steps (24 epochs of mnist-5k): the tiny UNet's budget of about 7 minutes on 2 CPU
    # cores, leaving the rest of 10 for validation and the Quality section (FID 21.1 on 1,000 samples).
    default_batch_size = 64
    default_steps = 1500
    trace_columns = (("loss", "Loss"), ("test_loss", "Test loss"))
    monitor = "test_loss"
    likelihood_data_model = "256-way discrete (8-bit pixels)"
    likelihood_kind = "bound: variational (Ho et al. 2020), discretized Gaussian decoder"
    likelihood_images = 1000  # `genlab eval` bounds a seeded subset this large: each image costs K + 1 passes
    explanation = explain  # what `genlab explain` measures: explain.py
    idea = (
        "Training adds Gaussian noise to each image at a random step t of a fixed noising chain and teaches a UNet "
        "to predict that noise from the noisy image and t. Generating starts from pure noise and removes the "
        "predicted noise step by step until an image remains."
    )
    # What `sample` takes beyond n, generator and labels; each run's default is its config field.
    sampler_options = (
        SamplerOption(
            "sampler",
            str,
            "diffusion: ddpm (ancestral steps), ddim (deterministic with --eta 0), dpm++ (DPM-Solver++, "
            "deterministic) or dpm++sde (its SDE variant; the default of new runs, 20 steps)",
            config_field="sampler",
            choices=SAMPLERS,
        ),
        SamplerOption(
            "steps",
            int,
            "diffusion: denoising steps (default the model's; 20 for new runs)",
            config_field="sample_steps",
            minimum=1,
        ),
        SamplerOption(
            "eta",
            float,
            "diffusion, ddim and dpm++: fresh noise per step, 0 (deterministic) to 1",
            config_field="eta",
            minimum=0.0,
            maximum=1.0,
        ),
        SamplerOption(
            "guidance",
            float,
            "conditional diffusion: classifier-free guidance scale (0 unconditional, 1 conditional)",
            config_field="guidance",
            minimum=0.0,
        ),
    )
    config: DDPMConfig
    updates: torch.Tensor  # () long: optimizer steps taken, for the EMA's warm-up

    def __init__(self, config: DDPMConfig, data: DataSpec):
        super().__init__(config, data)
        sizes = config.unet()
        factor = 2 ** (len(sizes.channel_mult) - 1)
        if data.height % factor or data.width % factor:
            raise GenlabError(
                f"this UNet halves the image {len(sizes.channel_mult) - 1} times, so height and width must be "
                f"multiples of {factor}; these are {data.height}x{data.width}: resize with --size or change "
                "channel_mult"
            )
        self.network = UNet(
            data.channels,
            sizes.channels,
            sizes.channel_mult,
            sizes.num_res_blocks,
            config.attention,
            sizes.dropout,
            data.num_classes if config.conditional else 0,
        )
        # The UNet has no buffers (GroupNorm keeps no running statistics), so the EMA's copying of
        # buffers changes nothing: only the parameters are averaged.
        self.ema_network: nn.Module | None = ema_copy(self.network) if config.ema else None
        self.diffusion = GaussianDiffusion(config.diffusion_steps, config.schedule, config.prediction)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @property
    def sample_batch_size(self) -> int:
        # Each of the 50-1,000 UNet passes holds (B, 32-64, 28, 28) activations: at B = 1,000 they
        # outgrow a CPU's caches, and a CPU core denoises faster in batches of 64 (benchmarks/README.md).
        return 1000 if self.device.type == "cuda" else 64

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"network": self.adam(self.network.parameters(), self.config.lr)}

    # ---------------------------------------------------------------- training

    def _labels_for_training(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The labels the network is told in training: `label_dropout` of them replaced by the null class
        (index num_classes), so one network learns the conditional and the unconditional prediction."""
        labels = self.condition(labels)
        if labels is None:
            return None
        return drop_labels(labels, self.config.label_dropout, self.data.num_classes)

    def _loss(self, batch: Batch, network: nn.Module) -> torch.Tensor:
        """L_simple of `network` on the batch at random timesteps; draws t, then the label dropout, then the noise."""
        x, labels = batch
        x0 = to_symmetric(x)  # (B, C, H, W) in [-1, 1]
        t = torch.randint(0, self.diffusion.steps, (len(x0),), device=x0.device)
        return self.diffusion.training_losses(network, x0, t, labels=self._labels_for_training(labels)).mean()

    def training_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
        loss = self._loss(batch, self.network)
        optimizer = optimizers["network"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.network.parameters(), 1.0)  # as the reference code: tames rare spikes
        optimizer.step()
        self.updates += 1
        if self.ema_network is not None:
            update_ema(self.ema_network, self.network, self.config.ema, int(self.updates))
        return {"loss": loss.item()}

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        """The training loss (L_simple) of the sampling network on held-out images, at random timesteps."""
        return {"test_loss": self._loss(batch, self.sampling_network()).item()}

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, timesteps: int | None = None
    ) -> torch.Tensor:
        """The variational lower bound on log p(x) in nats per image, (B,) (Ho et al. 2020, eq. 5).

        `x` (B, C, H, W) holds 8-bit pixels as k/255 in [0, 1]; the bound is on their 256-level
        distribution. The sum over the chain's T terms is a stratified estimate from `timesteps`
        (default the config's `likelihood_timesteps`) network passes per image, plus the decoder's;
        seed torch for a reproducible figure. A conditional model given no labels bounds the
        unconditional p(x) (the null class).
        """
        network = self.sampling_network()
        labels = None if labels is None else self.condition(labels)
        with eval_mode(network):
            x0 = to_symmetric(x.to(self.device))  # (B, C, H, W) on the 256-level grid of [-1, 1]
            bound = self.diffusion.variational_bound(
                lambda x_t, t: network(x_t, t, labels), x0, timesteps or self.config.likelihood_timesteps
            )
        return -bound.float()

    # ---------------------------------------------------------------- sampling

    def sampling_network(self) -> nn.Module:
        """The EMA copy where there is one, else the trained UNet."""
        return self.ema_network if self.ema_network is not None else self.network

    def guided(self, labels: torch.Tensor | None, guidance: float) -> NetworkFn:
        """The prediction function the samplers call: conditional, unconditional, or guided."""
        network = self.sampling_network()
        if labels is None or guidance == 1.0:
            return lambda x, t: network(x, t, labels)
        null = torch.full_like(labels, self.data.num_classes)
        if guidance == 0.0:
            return lambda x, t: network(x, t, null)

        def mix(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            both = network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))  # one batched pass
            conditional, unconditional = both.chunk(2)
            return unconditional + guidance * (conditional - unconditional)

        return mix

    def check_sampler_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """As declared, and `steps` at most the chain's length."""
        checked = super().check_sampler_options(options)
        steps = checked.get("steps")
        if steps is not None and steps > self.config.diffusion_steps:
            raise GenlabError(
                f"--steps must be from 1 to the model's {self.config.diffusion_steps} diffusion steps, got {steps!r}"
            )
        return checked

    @torch.no_grad()
    def _denoise(
        self,
        n: int,
        generator: torch.Generator | None,
        labels: torch.Tensor | None,
        *,
        trajectory_every: int,
        sampler: str | None = None,
        steps: int | None = None,
        eta: float | None = None,
        guidance: float | None = None,
        initial: torch.Tensor | None = None,
        on_step: StepListener | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """n images in [0, 1] and every `trajectory_every`-th state in [0, 1] (0: none); an option left None is
        the config's. `on_step` hears each step's x_t and x̂_0 in [-1, 1]."""
        labels = self.check_labels(n, labels)
        guidance = self.config.guidance if guidance is None else float(guidance)
        if guidance != 1.0 and not self.conditional:
            raise GenlabError("--guidance needs a conditional model (train with --conditional)")
        with eval_mode(self.sampling_network()):
            images, trajectory = run_sampler(
                self.guided(labels, guidance),
                self.diffusion,
                (n, *self.data.image_shape),
                sampler=sampler or self.config.sampler,
                steps=steps or self.config.sample_steps,
                eta=self.config.eta if eta is None else eta,
                generator=generator,
                device=self.device,
                trajectory_every=trajectory_every,
                initial=initial,
                on_step=on_step,
            )
        return from_symmetric(images), [from_symmetric(x) for x in trajectory]

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        eta: float | None = None,
        guidance: float | None = None,
        initial: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1]; the options left None are the config's (`sampler_options`).
        `initial` replaces the first draw x_T."""
        images, _ = self._denoise(
            n,
            generator,
            labels,
            sampler=sampler,
            steps=steps,
            eta=eta,
            guidance=guidance,
            trajectory_every=0,
            initial=initial,
        )
        return images

    @property
    def chain_steps(self) -> int:
        spacing = log_snr_spaced if self.config.sampler.startswith("dpm++") else respaced_timesteps
        return len(spacing(self.diffusion, self.config.sample_steps))

    @property
    def chain_sampler(self) -> str:
        return SAMPLER_TITLES[self.config.sampler]

    @torch.no_grad()
    def sample_chain(
        self,
        n: int,
        every: int,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        on_step: StepListener | None = None,
        **options: Any,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """n images (n, C, H, W) in [0, 1] and the chain [x_T, ..., x_0] in [0, 1], every `every` steps
        (and x_0 last); `options` are `sample`'s sampler options (sampler, steps, eta, guidance). `on_step` hears
        every step as it is taken: (step, steps, x_t, x̂_0), the images in [0, 1]."""
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise GenlabError(f"the chain is shown every K steps, K a positive integer; got {every!r}")

        def in_unit_range(step: int, steps: int, x: torch.Tensor, x0: torch.Tensor) -> None:
            assert on_step is not None
            on_step(step, steps, from_symmetric(x.clamp(-1, 1)), from_symmetric(x0))

        listener = None if on_step is None else in_unit_range
        return self._denoise(n, generator, labels, trajectory_every=every, on_step=listener, **options)

    # ---------------------------------------------------------------- the latent: x_T

    def sample_latent(
        self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x_T ~ N(0, I) (n, C, H, W), whatever the labels: DDIM with eta 0 maps it to one image."""
        return self.randn(n, *self.data.image_shape, generator=generator)

    def interpolate(
        self, steps: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Spherical interpolation between two x_T (Song et al. 2021), each decoded by deterministic DDIM."""
        z0, z1 = self.sample_latent(2, generator)
        theta = torch.arccos((z0 * z1).sum() / (z0.norm() * z1.norm()))
        weights = torch.linspace(0, 1, steps, device=z0.device)
        z = torch.stack(
            [(torch.sin((1 - w) * theta) * z0 + torch.sin(w * theta) * z1) / torch.sin(theta) for w in weights]
        )
        return self.decode(z, self.check_labels(steps, labels))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.sample(len(z), labels=labels, sampler="ddim", eta=0.0, initial=z)
