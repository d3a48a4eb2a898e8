"""Text measures against known answers: copied windows, the longest copied span, distinct-n, self-BLEU, the
compressor reference, and the text observation rules."""

from __future__ import annotations

import lzma

import numpy as np
import pytest

from genlab.eval.text import (
    compressor_bits_per_byte,
    copied_share,
    distinct_n,
    longest_copied_span,
    observe_text,
    self_bleu,
    window_keys,
)

TRAIN = b"the quick brown fox jumps over the lazy dog; " * 3 + b"a wholly different sentence follows here."


def test_window_keys_are_equal_exactly_for_equal_windows():
    keys = window_keys(b"abcdabcdabcx", width=4)
    assert len(keys) == 9 and keys[0] == keys[4] and len(set(keys.tolist())) == 5  # abcd bcda cdab dabc, twice; abcx
    assert len(window_keys(b"abc", width=4)) == 0


def test_copied_share_counts_windows_found_in_the_training_text():
    keys = np.sort(window_keys(TRAIN, width=8))
    assert copied_share([TRAIN[5:30]], keys, width=8) == 1.0
    assert copied_share([b"zzzzzzzzzzzzzzzz"], keys, width=8) == 0.0
    half = b"the quick brown " + b"ZZZZZZZZZZZZZZZZ"  # 25 windows of 8: the first 9 lie in TRAIN
    assert copied_share([half], keys, width=8) == pytest.approx(9 / 25)
    assert copied_share([b"short"], keys, width=8) == 0.0


def test_longest_copied_span_is_the_longest_common_stretch():
    assert longest_copied_span(b"XXjumps over the lazyYY", TRAIN) == len(b"jumps over the lazy")
    assert longest_copied_span(b"QQQ", TRAIN) == 0
    text = b"a wholly different!"
    assert longest_copied_span(text, TRAIN) == max(
        j - i for i in range(len(text)) for j in range(i, len(text) + 1) if text[i:j] in TRAIN
    )  # the brute force


def test_distinct_n_and_self_bleu_known_answers():
    assert distinct_n(["a b a b", "a b"], 1) == pytest.approx(2 / 6)
    assert distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)  # (a b), (b a), (a b) | (a b)
    assert distinct_n([""], 2) == 0.0
    assert self_bleu(["the cat sat on the mat"] * 3) == pytest.approx(1.0)
    assert self_bleu(["a b c d e", "f g h i j"]) == 0.0
    same_start = self_bleu(["the cat sat on the mat today", "the cat sat on the rug now"])
    assert 0.1 < same_start < 1.0
    assert self_bleu(["only one"]) == 0.0


def test_the_compressor_reference_is_lzmas_size_in_bits_per_byte():
    data = TRAIN * 20
    assert compressor_bits_per_byte(data)["xz -9e"] == pytest.approx(
        8 * len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)) / len(data)
    )


def test_text_observations_fire_only_well_past_held_out_text():
    floor = {"copy_share": 0.05, "distinct_2": 0.9}
    assert observe_text({"copy_share": 0.055, "distinct_2": 0.8}, floor) == []
    found = observe_text({"copy_share": 0.30, "distinct_2": 0.2}, floor)
    assert found[0].startswith("samples copying training text: 30.0%") and found[1].startswith(
        "collapse into repetition"
    )


def test_copied_pieces_mark_exactly_the_characters_inside_copied_windows():
    from genlab.eval.text import copied_pieces

    train = ("The quick brown fox jumps over the lazy dog near the riverbank. " * 2).encode()
    keys = np.sort(window_keys(train))
    copied = "the quick brown fox jumps over the lazy dog near"  # 48 bytes of the training text (case aside)
    text = "Zebras é|" + copied[4:] + "|ünïcode"  # "|" is not in the training text
    pieces = copied_pieces(text, keys)
    assert "".join(piece for piece, _ in pieces) == text
    assert [piece for piece, mark in pieces if mark] == [copied[4:]]
    assert copied_pieces("short", keys) == [("short", False)]
