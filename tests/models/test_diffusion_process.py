"""The Gaussian diffusion's closed forms and the samplers, without any trained network."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.errors import GenlabError
from genlab.models.ddpm import (
    GaussianDiffusion,
    beta_schedule,
    discretized_gaussian_log_likelihood,
    log_snr_spaced,
    respaced,
    run_sampler,
)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedules_run_from_almost_clean_to_almost_pure_noise(schedule):
    betas = beta_schedule(schedule, 1000)
    alpha_bar = torch.cumprod(1 - betas, 0)
    assert betas.shape == (1000,) and bool((betas > 0).all()) and bool((betas <= 0.999).all())
    assert alpha_bar[0] > 0.999 - 1e-3 and alpha_bar[-1] < 1e-4
    assert bool((alpha_bar[1:] < alpha_bar[:-1]).all())


def test_linear_schedule_is_ho_et_al():
    betas = beta_schedule("linear", 1000)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)


@pytest.mark.parametrize("t", [0, 250, 999])
def test_q_sample_marginals_match_the_closed_form(t):
    diffusion = GaussianDiffusion(1000, "cosine")
    x0 = torch.full((200_000, 1, 1, 1), 0.6)
    g = torch.Generator().manual_seed(0)
    x_t = diffusion.q_sample(x0, torch.full((len(x0),), t), torch.randn(x0.shape, generator=g))
    alpha_bar = diffusion.alpha_bar[t].item()
    assert x_t.mean().item() == pytest.approx(math.sqrt(alpha_bar) * 0.6, abs=5e-3)
    assert x_t.var().item() == pytest.approx(1 - alpha_bar, abs=5e-3 + 0.01 * (1 - alpha_bar))


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_the_true_target_recovers_x0_and_the_noise(prediction):
    diffusion = GaussianDiffusion(1000, "linear", prediction)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.rand(6, 1, 4, 4, generator=g) * 2 - 1, torch.randn(6, 1, 4, 4, generator=g)
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    x_t = diffusion.q_sample(x0, t, noise)
    x0_hat, eps_hat = diffusion.split(diffusion.target(x0, t, noise), x_t, t)
    assert torch.allclose(x0_hat, x0, atol=2e-3) and torch.allclose(eps_hat, noise, atol=1e-4)


def test_one_reverse_step_with_the_true_noise_recovers_x0():
    """From x_t at the last timestep of a 1-step walk, the true ε gives back x_0 exactly."""
    diffusion = GaussianDiffusion(1000, "linear")
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(3, 1, 4, 4, generator=g) * 1.8 - 0.9
    noise = torch.randn(3, 1, 4, 4, generator=g)
    t = torch.full((3,), 300)
    x_t = diffusion.q_sample(x0, t, noise)
    x0_hat, _ = diffusion.split(noise, x_t, t)
    assert torch.allclose(x0_hat, x0, atol=1e-5)
    mean, _ = diffusion.posterior(x0, x_t, t)
    x_prev = diffusion.q_sample(x0, t - 1, noise)  # not the posterior mean, but close for small β
    assert (mean - x_prev).abs().max() < 0.05


def test_posterior_matches_bayes_on_one_pixel():
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0): compare mean and variance."""
    diffusion = GaussianDiffusion(100, "linear")
    t = 40
    beta = diffusion.betas[t].double()
    prev = diffusion.alpha_bar[t - 1].double()
    x0, x_t = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-0.2, dtype=torch.float64)
    precision = 1 / (1 - prev) + (1 - beta) / beta
    mean = (prev.sqrt() * x0 / (1 - prev) + (1 - beta).sqrt() * x_t / beta) / precision
    got_mean, got_log_var = diffusion.posterior(x0.float().reshape(1, 1, 1, 1), x_t.float().reshape(1, 1, 1, 1),
                                                torch.tensor([t]))
    assert got_mean.item() == pytest.approx(mean.item(), abs=1e-5)
    assert math.exp(got_log_var.item()) == pytest.approx(1 / precision.item(), rel=1e-4)


def test_respacing():
    assert respaced(1000, 1000).tolist() == list(range(1000))
    steps = respaced(1000, 50)
    assert len(steps) == 50 and steps[0] == 0 and steps[-1] == 999
    with pytest.raises(GenlabError, match="--steps must be from 1 to the model's 1000"):
        respaced(1000, 0)


def oracle(diffusion, x0):
    """A network that knows the data is the single image x0: it predicts ε exactly."""

    def network(x_t, t):
        alpha_bar = diffusion.at(diffusion.alpha_bar, t, x_t)
        return (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()

    return network


@pytest.mark.parametrize(
    "sampler, steps", [("ddim", 10), ("ddim", 1000), ("ddpm", 25), ("ddpm", 1000), ("dpm++", 10), ("dpm++", 200), ("dpm++sde", 25)]
)
def test_samplers_reach_the_data_an_oracle_knows(sampler, steps):
    diffusion = GaussianDiffusion(1000, "linear")
    x0 = torch.linspace(-0.8, 0.8, 16).reshape(1, 1, 4, 4)
    images, _ = run_sampler(oracle(diffusion, x0), diffusion, (3, 1, 4, 4), sampler=sampler, steps=steps,
                       generator=torch.Generator().manual_seed(0))
    assert torch.allclose(images, x0.expand(3, -1, -1, -1), atol=1e-3)


def test_ddim_with_eta_0_is_deterministic_and_ddpm_is_not_without_its_seed():
    diffusion = GaussianDiffusion(1000, "cosine")

    def network(x_t, t):  # any smooth function of (x_t, t)
        return 0.5 * x_t + 0.001 * t.float().reshape(-1, 1, 1, 1)

    def run(sampler, seed, **kwargs):
        return run_sampler(network, diffusion, (2, 1, 4, 4), sampler=sampler, steps=20,
                      generator=torch.Generator().manual_seed(seed), **kwargs)[0]

    assert torch.equal(run("ddim", 3), run("ddim", 3))
    assert torch.equal(run("dpm++", 3), run("dpm++", 3))
    assert not torch.equal(run("dpm++", 3), run("dpm++", 3, eta=1.0))  # the SDE solver's fresh noise
    assert torch.equal(run("ddpm", 3), run("ddpm", 3))  # the same seed, the same chain
    assert not torch.equal(run("ddim", 3), run("ddim", 4))  # x_T differs
    assert not torch.equal(run("ddim", 3), run("ddim", 3, eta=0.5))  # fresh noise at every step


def gaussian_data_oracle(diffusion, mean, std):
    """ε-prediction of a network that knows the data is N(mean, std²) per pixel: the exact posterior mean of x_0."""

    def network(x_t, t):
        alpha_bar = diffusion.at(diffusion.alpha_bar, t, x_t).double()
        a, b = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        x0 = mean + a * std**2 / (a**2 * std**2 + b**2) * (x_t - a * mean)  # E[x_0 | x_t]
        return (x_t - a * x0) / b

    return network


def test_dpm_solver_converges_at_second_order_to_the_exact_flow_of_gaussian_data():
    """For data N(m, s²) the probability-flow ODE is affine: (x_t − α_t m) / sqrt(α_t² s² + σ_t²) stays constant,
    so x_T maps to m + s (x_T − α_T m) / sqrt(α_T² s² + σ_T²). Doubling the steps must cut DPM-Solver++'s error
    about four times (second order) and DDIM's about twice (first order)."""
    diffusion = GaussianDiffusion(20_000, "linear").double()
    mean, std = 0.1, 0.25
    x_T = 0.8 * torch.randn(500, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    alpha_bar = diffusion.alpha_bar[-1].double()
    exact = mean + std * (x_T - alpha_bar.sqrt() * mean) / (alpha_bar * std**2 + 1 - alpha_bar).sqrt()

    def error(sampler, steps):
        images, _ = run_sampler(gaussian_data_oracle(diffusion, mean, std), diffusion, x_T.shape, sampler=sampler,
                                steps=steps, initial=x_T)
        return (images - exact).abs().max().item()

    dpm = {steps: error("dpm++", steps) for steps in (20, 40, 80)}
    ddim = {steps: error("ddim", steps) for steps in (20, 40, 80)}
    assert dpm[40] / dpm[80] > 3.5 and 1.8 < ddim[40] / ddim[80] < 2.2
    assert dpm[20] < ddim[80] / 3  # 20 steps of DPM-Solver++ beat 80 of DDIM


def test_log_snr_spacing_is_even_in_log_snr_and_spans_the_chain():
    diffusion = GaussianDiffusion(1000, "linear")
    steps = log_snr_spaced(diffusion, 20)
    assert steps[0] == 0 and steps[-1] == 999 and len(steps) == 20 and bool((steps.diff() > 0).all())
    alpha_bar = diffusion.alpha_bar.double()[steps]
    gaps = 0.5 * torch.log(alpha_bar / (1 - alpha_bar)).diff().abs()
    assert gaps[1:-1].max() / gaps[1:-1].min() < 1.6  # even up to rounding to whole timesteps
    assert log_snr_spaced(diffusion, 1000).tolist() == list(range(1000))  # every timestep, none twice
    assert log_snr_spaced(GaussianDiffusion(20, "linear"), 5).tolist() == [0, 7, 15, 18, 19]  # ᾱ_T = 0: λ_T floored
    with pytest.raises(GenlabError, match="--steps must be from 1 to the model's 1000"):
        log_snr_spaced(diffusion, 1001)


def test_every_sampler_has_a_title_for_captions():
    from genlab.models.ddpm.samplers import SAMPLER_TITLES, SAMPLERS

    assert tuple(SAMPLER_TITLES) == SAMPLERS


def test_trajectory_and_bad_sampler():
    diffusion = GaussianDiffusion(100, "linear")
    x0 = torch.zeros(1, 1, 4, 4)
    images, trajectory = run_sampler(oracle(diffusion, x0), diffusion, (2, 1, 4, 4), steps=10, trajectory_every=5,
                                generator=torch.Generator().manual_seed(0))
    assert len(trajectory) == 3 and torch.equal(trajectory[-1], images)  # x_T, after 5 steps, x_0
    with pytest.raises(GenlabError, match="unknown sampler 'euler'"):
        run_sampler(oracle(diffusion, x0), diffusion, (1, 1, 4, 4), sampler="euler")


# ---------------------------------------------------------------- the variational bound


def test_the_discretized_decoder_puts_probability_1_on_the_256_levels():
    levels = torch.arange(256, dtype=torch.float64) / 255 * 2 - 1  # the 8-bit grid in [-1, 1]
    for mean, std in [(0.0, 0.1), (0.93, 0.004), (-1.2, 0.5)]:
        log_p = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean),
                                                    torch.full_like(levels, 2 * math.log(std)))
        assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    # a narrow Gaussian centred on a level gives it almost all the mass: P = erf(1 / (255 σ √2))
    log_p = discretized_gaussian_log_likelihood(levels[100:101], levels[100:101], torch.tensor([2 * math.log(0.002)]))
    assert log_p.exp().item() == pytest.approx(math.erf(1 / (255 * 0.002 * math.sqrt(2))), rel=1e-6)


def test_prior_kl_is_the_closed_form():
    diffusion = GaussianDiffusion(100, "linear")
    x0 = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    a = diffusion.alpha_bar[-1].double()
    expected = sum(0.5 * ((1 - a) - 1 - math.log(1 - a) + a * v**2) for v in x0.flatten().double())
    assert diffusion.prior_kl(x0).item() == pytest.approx(float(expected), rel=1e-9)


def test_an_oracle_of_one_image_is_bounded_by_the_prior_term_and_the_decoder():
    """A network that knows x0 exactly leaves every KL term at 0: the bound is L_T + L_0 alone."""
    diffusion = GaussianDiffusion(100, "linear")
    torch.manual_seed(0)
    # levels 1..254: the decoder's central bins (0 and 255 own the half-lines beyond them), whatever
    # RNG state earlier tests left
    x0 = (torch.randint(1, 255, (2, 1, 4, 4)) / 255 * 2 - 1).float()
    bound = diffusion.variational_bound(oracle(diffusion, x0), x0, strata=99)
    decoder_std = diffusion.posterior_log_variance[0].exp().sqrt().item()  # √β̃_1 of the decoder
    per_pixel = -math.log(math.erf(1 / (255 * decoder_std * math.sqrt(2))))  # x̂_0 = x0: the central bin
    expected = diffusion.prior_kl(x0) + 16 * per_pixel
    assert torch.allclose(bound, expected, rtol=1e-3)


def test_the_stratified_estimate_is_unbiased():
    """Few strata estimate the same sum as every term: means over many images agree within their error."""
    diffusion = GaussianDiffusion(20, "cosine")

    def network(x_t, t):  # a poor, t-dependent ε predictor: every term is non-zero
        return 0.3 * x_t + 0.01 * t.float().reshape(-1, 1, 1, 1)

    x0 = (torch.linspace(0, 255, 16).round() / 255 * 2 - 1).reshape(1, 1, 4, 4).expand(4000, -1, -1, -1)
    torch.manual_seed(0)
    every_term = diffusion.variational_bound(network, x0, strata=19)
    few = diffusion.variational_bound(network, x0, strata=3)
    error = math.sqrt(every_term.var() / len(x0) + few.var() / len(x0))
    assert abs(every_term.mean() - few.mean()) < 4 * error
    assert few.var() > every_term.var()  # the price of fewer network passes
