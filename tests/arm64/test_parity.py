"""The x86/arm64 parity check: what passes, what fails, and that every differing text is listed."""

from __future__ import annotations

import math

import pytest

from bench.arm64.parity import MIN_COSINE, compare, cosine

TEXTS = ["play some jazz", "book a table for two", "will it rain tomorrow", "rate this book"]
X86 = {"intents": ["PlayMusic", "BookRestaurant", "GetWeather", "RateBook"],
       "logits": [[3.0, 0.1, -1.0], [0.2, 2.5, 0.0], [-1.0, 0.0, 4.0], [1.0, 1.0, 0.5]]}


def _arm(intents=None, logits=None, skip=()):
    arm = {"intents": list(intents or X86["intents"]), "logits": [list(r) for r in (logits or X86["logits"])]}
    for i in skip:
        arm["intents"][i] = arm["logits"][i] = None
    return arm


def test_identical_answers_pass():
    report = compare(TEXTS, X86, _arm(), cpu="neoverse-n1")
    assert report.passed and report.checked == 4 and report.mismatches == ()
    assert report.min_cosine == pytest.approx(1.0) and report.max_abs_diff == 0.0
    assert report.to_dict()["passed"] is True and "parity ok" in report.format()


def test_a_different_intent_fails_and_names_the_text():
    # Given an arm64 answer whose intent differs for one text
    report = compare(TEXTS, X86, _arm(intents=["PlayMusic", "BookRestaurant", "GetWeather", "AddToPlaylist"]),
                     cpu="cortex-a72")
    # Then the check fails and lists that text with both intents
    assert not report.passed and report.intent_flips == 1
    (m,) = report.mismatches
    assert (m.text, m.x86_intent, m.arm64_intent) == ("rate this book", "RateBook", "AddToPlaylist")
    assert "'rate this book'" in report.format() and "AddToPlaylist" in report.format()


def test_logits_below_the_cosine_bound_fail_even_with_the_same_intent():
    logits = [list(r) for r in X86["logits"]]
    logits[0] = [3.0, 0.1, -0.5]  # same argmax, cosine about 0.986
    report = compare(TEXTS, X86, _arm(logits=logits), cpu="neoverse-n1")
    assert not report.passed and report.intent_flips == 0
    assert report.mismatches[0].index == 0 and report.mismatches[0].cosine < MIN_COSINE


def test_last_place_differences_pass():
    logits = [[v * (1 + 1e-7) for v in r] for r in X86["logits"]]
    assert compare(TEXTS, X86, _arm(logits=logits), cpu="neoverse-n1").passed


def test_a_stated_mismatch_rate_admits_that_many_and_still_lists_them():
    arm = _arm(intents=["PlayMusic", "BookRestaurant", "GetWeather", "AddToPlaylist"])
    assert not compare(TEXTS, X86, arm, cpu="c", max_rate=0.2).passed  # floor(0.2 * 4) = 0 allowed
    report = compare(TEXTS, X86, arm, cpu="c", max_rate=0.25)
    assert report.passed and report.allowed == 1 and len(report.mismatches) == 1
    assert "1 allowed" in report.format() and "'rate this book'" in report.format()
    with pytest.raises(ValueError, match="max_rate"):
        compare(TEXTS, X86, arm, cpu="c", max_rate=1.0)


def test_texts_the_arm64_side_did_not_run_are_not_counted():
    report = compare(TEXTS, X86, _arm(skip=(1, 3)), cpu="cortex-a72")
    assert report.passed and report.checked == 2


def test_nothing_checked_is_a_failure():
    assert not compare(TEXTS, X86, _arm(skip=range(4)), cpu="c").passed


def test_an_arm64_answer_without_x86_reference_is_an_error():
    x86 = {"intents": [None] * 4, "logits": [None] * 4}
    with pytest.raises(ValueError, match="no x86 reference"):
        compare(TEXTS, x86, _arm(), cpu="c")


def test_cosine_of_zero_vectors():
    import numpy as np

    assert cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine(np.zeros(3), np.ones(3)) == 0.0
    assert math.isclose(cosine(np.array([1.0, 0.0]), np.array([0.0, 2.0])), 0.0)
