"""The "contest" observations for GAN training, on synthetic histories, and their wiring."""

import math

import pytest

from genlab.explain.observations import (
    COLLAPSE_DIVERSITY,
    DOMINANT_ACCURACY,
    observe,
    observe_contest,
    observe_contest_epoch,
    observe_history,
    observe_with,
    observer_of,
)
from genlab.explain.trace import training_trace, training_trace_table
from genlab.models import VAE
from genlab.models.base import GenerativeModel

HEALTHY = {
    "d_loss": 1.2, "g_loss": 0.9, "d_accuracy": 0.72, "d_real": 0.61, "d_fake": 0.38,
    "d_grad_norm": 1.5, "g_grad_norm": 0.8, "diversity": 0.95, "images_per_second": 5000.0,
}


def history_of(n, **series):
    """n epoch records of a healthy contest; a keyword gives a key's value per epoch (None: missing)."""
    history = []
    for i in range(n):
        record = {"epoch": i + 1, **HEALTHY}
        for key, values in series.items():
            value = values[i] if isinstance(values, (list, tuple)) else values
            if value is None:
                record.pop(key, None)
            else:
                record[key] = value
        history.append(record)
    return history


class GANLike:
    observer = "contest"
    monitor = "g_loss"
    trace_columns = (("d_loss", "D loss"), ("g_loss", "G loss"), ("d_accuracy", "D accuracy"))


class NoObserver(GenerativeModel):  # a family that leaves `observer` and `monitor` at the contract's defaults
    trace_columns = (("loss", "Loss"),)


# --- each rule ---------------------------------------------------------------------------------


def test_first_epoch_starts_learning_with_d_numbers():
    history = history_of(1, d_accuracy=0.81, d_real=0.66, d_fake=0.31)
    assert observe_contest_epoch(history) == "starts learning: D accuracy 0.81, D(real) 0.66, D(fake) 0.31"


def test_balanced_contest_gives_d_accuracy_and_outputs():
    assert observe_contest_epoch(history_of(2)) == "contest balanced: D accuracy 0.72, D(real) 0.61, D(fake) 0.38"


@pytest.mark.parametrize("key", ["d_loss", "g_loss"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_loss_is_divergence(key, bad):
    history = history_of(3, **{key: [1.0, 1.0, bad]})
    assert observe_contest_epoch(history) == f"training diverged: {key} is {bad}"


def test_divergence_names_both_losses_and_comes_even_on_the_first_epoch():
    history = history_of(1, d_loss=math.nan, g_loss=math.inf)
    assert observe_contest_epoch(history) == "training diverged: d_loss is nan, g_loss is inf"


def test_low_diversity_is_mode_collapse_with_its_number():
    history = history_of(3, diversity=[0.9, 0.6, 0.32])
    assert observe_contest_epoch(history) == "mode collapse suspected: samples are 0.32 of real data's diversity"


def test_diversity_at_the_threshold_is_not_collapse():
    assert COLLAPSE_DIVERSITY == 0.5
    assert observe_contest_epoch(history_of(2, diversity=0.5)).startswith("contest balanced")
    assert observe_contest_epoch(history_of(2, diversity=0.49)).startswith("mode collapse suspected")


def test_low_recall_with_good_precision_is_mode_collapse():
    history = history_of(4, precision=[None, 0.7, None, 0.81], recall=[None, 0.3, None, 0.06])
    assert observe_contest_epoch(history) == (
        "mode collapse suspected: recall 0.06 with precision 0.81: samples look real but cover little of the data"
    )


def test_recall_rule_needs_both_numbers_past_their_thresholds():
    # recall just over 0.1, or precision not over 0.5: no collapse
    assert observe_contest_epoch(history_of(2, precision=0.8, recall=0.1)).startswith("contest balanced")
    assert observe_contest_epoch(history_of(2, precision=0.5, recall=0.05)).startswith("contest balanced")
    assert observe_contest_epoch(history_of(2, precision=0.51, recall=0.09)).startswith("mode collapse")


def test_recall_measured_epochs_ago_still_counts_and_names_its_epoch():
    history = history_of(4, precision=[None, 0.8, None, None], recall=[None, 0.05, None, None])
    assert observe_contest_epoch(history) == (
        "mode collapse suspected: recall 0.05 with precision 0.80 at epoch 2:"
        " samples look real but cover little of the data"
    )
    # a later, healthy measurement replaces it
    history = history_of(4, precision=[None, 0.8, 0.7, None], recall=[None, 0.05, 0.4, None])
    assert observe_contest_epoch(history).startswith("contest balanced")


def test_dominating_discriminator_over_three_epochs():
    history = history_of(4, d_accuracy=[0.7, 0.96, 0.97, 0.98])
    assert observe_contest_epoch(history) == (
        "discriminator dominating: D accuracy 0.96, 0.97, 0.98 over the last 3 epochs"
    )


def test_two_dominant_epochs_then_a_lower_one_is_not_domination():
    assert observe_contest_epoch(history_of(4, d_accuracy=[0.7, 0.96, 0.96, 0.9])).startswith("contest balanced")
    # only two epochs so far, both dominant: not yet
    assert observe_contest_epoch(history_of(2, d_accuracy=0.99)).startswith("contest balanced")


def test_domination_threshold_is_inclusive_and_a_missing_epoch_breaks_the_run():
    assert DOMINANT_ACCURACY == 0.95
    assert observe_contest_epoch(history_of(3, d_accuracy=0.95)).startswith("discriminator dominating")
    assert observe_contest_epoch(history_of(3, d_accuracy=0.949)).startswith("contest balanced")
    assert observe_contest_epoch(history_of(3, d_accuracy=[0.97, None, 0.97])).startswith("contest balanced")


def test_generator_loss_diverging_rises_three_epochs_to_over_twice_its_minimum():
    history = history_of(5, g_loss=[1.0, 0.8, 1.0, 1.3, 1.7])
    assert observe_contest_epoch(history) == (
        "generator loss diverging: g_loss rose 3 epochs in a row to 1.7, 2.1x its minimum 0.8"
    )


def test_generator_loss_rising_but_under_twice_its_minimum_is_not_diverging():
    history = history_of(5, g_loss=[1.0, 0.8, 1.0, 1.3, 1.6])  # exactly 2x
    assert observe_contest_epoch(history).startswith("contest balanced")


def test_generator_loss_rising_only_two_epochs_is_not_diverging():
    history = history_of(5, g_loss=[1.0, 0.8, 0.7, 1.3, 3.0])
    assert observe_contest_epoch(history).startswith("contest balanced")


def test_wgan_generator_loss_uses_the_typical_epoch_change():
    # critic-valued g_loss around zero, moving 0.1 an epoch; then three rises: 0.2 in all is
    # not over 2x the median move, 0.4 in all is
    calm = [0.0, -0.1, 0.0, -0.1]
    history = history_of(7, g_loss=calm + [0.0, 0.05, 0.1], wasserstein=1.0)
    assert observe_contest_epoch(history).startswith("contest balanced")  # rose 0.2 = 2 x 0.1
    history = history_of(7, g_loss=calm + [0.0, 0.1, 0.3], wasserstein=1.0)
    assert observe_contest_epoch(history) == (
        "generator loss diverging: g_loss rose 3 epochs in a row by 0.4 in all,"
        " over 2x its typical epoch change 0.1"
    )


def test_wgan_rule_applies_to_positive_critic_losses_too_and_needs_a_baseline():
    # positive and tripled, but a WGAN's loss scale is arbitrary: the ratio rule does not apply
    history = history_of(7, g_loss=[1.0, 2.0, 1.0, 2.0, 2.1, 2.2, 3.0], wasserstein=1.0)
    assert observe_contest_epoch(history).startswith("contest balanced")  # rose 1.0 < 2 x 1.0
    # too few epochs before the rise for a typical change: no verdict
    history = history_of(5, g_loss=[-1.0, -1.0, 0.0, 5.0, 50.0], wasserstein=1.0)
    assert observe_contest_epoch(history).startswith("contest balanced")
    history = history_of(6, g_loss=[-1.0, -1.1, -1.0, 0.0, 5.0, 50.0], wasserstein=1.0)
    assert observe_contest_epoch(history).startswith("generator loss diverging")


def test_fid_change_since_the_last_measurement_leads_the_balanced_sentence():
    history = history_of(5, fid=[None, None, 51.4, None, 45.2])
    assert observe_contest_epoch(history) == (
        "FID 45.2 (-12% since epoch 3); contest balanced: D accuracy 0.72, D(real) 0.61, D(fake) 0.38"
    )
    # fid on this epoch only, or on an earlier one only: no FID sentence
    assert observe_contest_epoch(history[:3]).startswith("contest balanced")
    assert observe_contest_epoch(history[:4]).startswith("contest balanced")


def test_wasserstein_estimate_and_its_trend():
    history = history_of(3, wasserstein=[1.5, 1.34, 1.23])
    assert observe_contest_epoch(history) == (
        "contest balanced: D accuracy 0.72, Wasserstein estimate 1.23 (falling from 1.34)"
    )
    assert observe_contest_epoch(history_of(2, wasserstein=[1.0, 1.2])).endswith("(rising from 1)")
    assert observe_contest_epoch(history_of(2, wasserstein=[None, 1.2])).endswith("Wasserstein estimate 1.2")


# --- precedence --------------------------------------------------------------------------------


def test_precedence_divergence_first_epoch_collapse_domination_g_loss_fid():
    everything = {"d_accuracy": 0.99, "diversity": 0.1, "g_loss": [0.5, 0.6, 0.8, 1.5], "fid": [80.0, None, None, 60.0]}
    assert observe_contest_epoch(history_of(4, **everything, d_loss=[1, 1, 1, math.nan])).startswith(
        "training diverged"
    )
    assert observe_contest_epoch(history_of(1, **everything)).startswith("starts learning")
    assert observe_contest_epoch(history_of(4, **everything)).startswith("mode collapse suspected")
    assert observe_contest_epoch(history_of(4, **{**everything, "diversity": 0.9})).startswith(
        "discriminator dominating"
    )
    assert observe_contest_epoch(history_of(4, **{**everything, "diversity": 0.9, "d_accuracy": 0.8})).startswith(
        "generator loss diverging"
    )
    assert observe_contest_epoch(
        history_of(4, **{**everything, "diversity": 0.9, "d_accuracy": 0.8, "g_loss": 0.9})
    ).startswith("FID 60 (-25% since epoch 1); contest balanced")


# --- missing keys ------------------------------------------------------------------------------


def test_missing_keys_leave_out_their_numbers_and_rules():
    bare = history_of(4, d_accuracy=None, d_real=None, d_fake=None, diversity=None, d_grad_norm=None)
    assert observe_contest(bare) == ["starts learning: D loss 1.2, G loss 0.9"] + [
        "contest balanced: D loss 1.2, G loss 0.9"
    ] * 3
    nothing = [{"epoch": i + 1} for i in range(3)]
    assert observe_contest(nothing) == ["starts learning: no D/G numbers recorded"] + [
        "contest balanced: no D/G numbers recorded"
    ] * 2
    assert observe_contest_epoch(history_of(2, d_fake=None)) == "contest balanced: D accuracy 0.72, D(real) 0.61"


def test_g_loss_missing_in_the_window_is_not_divergence():
    history = history_of(5, g_loss=[0.5, 0.6, None, 1.5, 2.0])
    assert observe_contest_epoch(history).startswith("contest balanced")


def test_observations_use_only_the_past():
    history = history_of(5, d_accuracy=[0.7, 0.8, 0.96, 0.97, 0.98])
    assert observe_contest(history) == [observe_contest_epoch(history[: i + 1]) for i in range(5)]
    assert observe_contest(history)[3].startswith("contest balanced")  # epoch 4 cannot see epoch 5
    assert observe_contest(history)[4].startswith("discriminator dominating")
    assert observe_contest([]) == []


# --- dispatch and the trace ----------------------------------------------------------------


def test_dispatch_on_the_family_observer():
    gan_history = history_of(3, d_accuracy=0.99)
    assert observer_of(GANLike) == "contest" and observer_of(VAE) == "loss" and observer_of(NoObserver) == "loss"
    assert observe_history(gan_history, GANLike) == observe_contest(gan_history)
    vae_history = [{"epoch": i + 1, "loss": v, "test_loss": v + 1} for i, v in enumerate([200.0, 150.0])]
    assert observe_history(vae_history, VAE) == observe(vae_history, "test_loss")
    assert observe_history(vae_history, NoObserver) == observe(vae_history, "loss")
    with pytest.raises(ValueError, match="unknown observer 'duel'"):
        observe_with(vae_history, "duel")


def test_table_takes_the_observer():
    history = history_of(3, d_accuracy=0.99)
    table = training_trace_table(history, GANLike.trace_columns, "g_loss", observer="contest")
    assert table.splitlines()[-1].endswith(
        "discriminator dominating: D accuracy 0.99, 0.99, 0.99 over the last 3 epochs"
    )


def test_training_trace_of_a_gan_shows_d_and_g_columns_and_charts_both_losses():
    history = history_of(4, d_loss=[1.4, 1.3, 1.2, 1.25], g_loss=[0.7, 0.8, 0.9, 0.85])
    text = training_trace(history, GANLike)
    lines = text.splitlines()
    assert [c.strip() for c in lines[1].split("|")] == [
        "Epoch", "D loss", "G loss", "D accuracy", "images/s", "Observation"
    ]
    assert [c.strip() for c in lines[6].split("|")] == [
        "4", "1.2500", "0.8500", "0.7200", "5,000", "contest balanced: D accuracy 0.72, D(real) 0.61, D(fake) 0.38"
    ]
    assert lines[3].endswith("starts learning: D accuracy 0.72, D(real) 0.61, D(fake) 0.38")
    assert lines[-1].strip() == "* d_loss   o g_loss"


def test_training_trace_of_a_contest_family_charts_d_and_g_losses_even_if_not_columns():
    class Quiet(GANLike):
        trace_columns = (("d_accuracy", "D accuracy"),)

    text = training_trace(history_of(3, g_loss=[0.5, 0.6, 0.7]), Quiet)
    assert text.splitlines()[-1].strip() == "* d_loss   o g_loss"
    assert "* loss   o test_loss" in training_trace(
        [{"epoch": 1, "loss": 2.0, "test_loss": 2.5}, {"epoch": 2, "loss": 1.0, "test_loss": 1.5}], VAE
    )


def test_a_record_without_the_monitored_number_is_said_not_to_have_it():
    history = [{"epoch": 1, "seconds": 1.0, "images_per_second": 1.0}]
    assert observe(history, "test_loss") == ["no loss recorded this epoch"]
    assert observe([{"epoch": 1, "loss": 2.0}, {"epoch": 2}], "loss")[1] == "no loss recorded this epoch"
