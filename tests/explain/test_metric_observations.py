"""The evaluation rules: samples copying training images and mode collapse, each against its floor."""

from genlab.explain.observations import observe_metrics

FLOOR = {"copy_share": 0.05, "ratio_test_share": 0.0, "recall": 0.9, "precision": 0.85}
HEALTHY = {"copy_share": 0.06, "ratio_test_share": 0.004, "classes_covered": 10, "num_classes": 10,
           "recall": 0.6, "precision": 0.7}


def test_healthy_numbers_say_nothing():
    assert observe_metrics(HEALTHY, FLOOR) == []
    assert observe_metrics({}, None) == []  # nothing measured: nothing to say


def test_copies_at_twice_the_floor_and_two_points_above_it_are_flagged():
    found = observe_metrics({**HEALTHY, "copy_share": 0.12}, FLOOR)
    assert found == ["samples copying training images: 12.0% of samples lie as close to a training image as only "
                     "5.0% of held-out real images do"]
    assert observe_metrics({**HEALTHY, "copy_share": 0.095}, FLOOR) == []  # under twice the floor
    # twice a tiny floor is still within noise of it: the 2-point excess is required too
    assert observe_metrics({**HEALTHY, "copy_share": 0.015}, {**FLOOR, "copy_share": 0.005}) == []


def test_near_duplicates_by_the_ratio_test_are_flagged():
    found = observe_metrics({**HEALTHY, "ratio_test_share": 0.03}, FLOOR)
    assert len(found) == 1 and "3.0% pass the near-duplicate ratio test" in found[0]


def test_samples_that_coincide_with_the_reference_images_are_flagged():
    floor = {**FLOOR, "reference_copy_share": 0.01}
    found = observe_metrics({**HEALTHY, "reference_copy_share": 0.6}, floor)
    assert found == ["samples coincide with the reference images: 60.0% of samples lie as close to a reference "
                     "image as only 1.0% of held-out real images do; FID against them means nothing"]
    assert observe_metrics({**HEALTHY, "reference_copy_share": 0.04}, floor) == []  # within 5 points of the floor
    assert observe_metrics({**HEALTHY, "reference_copy_share": 0.6}, FLOOR) == []  # no floor: nothing to judge


def test_missing_classes_and_low_recall_read_as_mode_collapse():
    found = observe_metrics({**HEALTHY, "classes_covered": 7}, FLOOR)
    assert found == ["mode collapse suspected: samples cover 7 of 10 classes"]
    unknown_coverage = {key: value for key, value in HEALTHY.items() if key != "classes_covered"}
    found = observe_metrics({**unknown_coverage, "recall": 0.05, "precision": 0.8}, FLOOR)
    assert len(found) == 1 and found[0].startswith("mode collapse suspected: recall 0.050")
    assert observe_metrics({**HEALTHY, "recall": 0.05, "precision": 0.3}, FLOOR) == []  # just a poor model


def test_low_recall_with_every_class_covered_reads_as_too_little_variety_not_collapse():
    # blurred VAE digits: every class drawn, each class's samples alike -> recall 0 at decent precision
    found = observe_metrics({**HEALTHY, "recall": 0.0, "precision": 0.59, "classes_covered": 10}, FLOOR)
    assert found == [
        "little variety within classes: recall 0.000 with precision 0.590, though samples cover all 10 classes "
        "(blurred or near-identical samples of each class; the sample grid shows which)"
    ]
