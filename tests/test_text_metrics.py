"""Answer metrics on hand-made outputs (values worked out by hand in the comments)."""

from __future__ import annotations

import pytest

from hardprompts.text_metrics import (
    II_TASK_METRIC,
    METRICS,
    choice_accuracy,
    contains,
    exact_match,
    exact_set,
    exact_str_match,
    normalize_answer,
    token_f1,
)


def test_normalisation_steps():
    # first line, text before the first ".", lower case, "-" -> " ", punctuation removed
    assert normalize_answer("  Ninety-Four.\nsecond line") == "ninety four"
    assert normalize_answer("Sentence 1: It rained, so I stayed.") == "it rained so i stayed"
    assert normalize_answer("cats and dogs!") == "cats dogs"
    assert normalize_answer("") == ""


def test_exact_match_normalises_and_takes_any_answer():
    assert exact_match(" Unfortunate.", ["unfortunate"]) == 1.0
    assert exact_match("ninety-four", ["Ninety four"]) == 1.0
    assert exact_match("unfortunately", ["unfortunate"]) == 0.0
    # any-of: translation_en-de lists every accepted translation
    assert exact_match("Zeitpunkt", ["Zeit", "Zeitpunkt", "Mal"]) == 1.0
    assert exact_match("Uhr", ["Zeit", "Zeitpunkt"]) == 0.0
    assert exact_match("a  b", ["a b"]) == 0.0  # inner whitespace kept, as in the paper's code
    assert exact_match("anything", []) == 0.0


def test_contains_matches_whole_words_only():
    assert contains("Synonyms: happy, glad, cheerful.", ["glad"]) == 1.0
    assert contains("gladly", ["glad"]) == 0.0  # not at a word boundary
    assert contains("it is big", ["little", "big"]) == 1.0
    assert contains("a (b) c", ["(b)"]) == 1.0  # punctuation removed on both sides; regex escaped
    assert contains("", [""]) == 1.0 and contains("x", [""]) == 0.0


def test_exact_set_ignores_order_and_repeats():
    assert exact_set("spider, chicken, tortoise", ["chicken, spider, tortoise"]) == 1.0
    assert exact_set("spider spider chicken tortoise", ["chicken, spider, tortoise"]) == 1.0
    assert exact_set("spider, chicken", ["chicken, spider, tortoise"]) == 0.0


def test_token_f1_by_hand():
    # pred {a, b, c}, gold {a, b, d, e}: shared 2, P = 2/3, R = 2/4, F1 = 2·(2/3)(1/2)/(2/3+1/2) = 4/7
    assert token_f1("a b c", ["a b d e"]) == pytest.approx(4 / 7)
    assert token_f1("a b c", ["x", "a b c"]) == 1.0  # best over answers
    assert token_f1("z", ["a"]) == 0.0
    # multiplicity: pred "a a", gold "a": shared 1, P = 1/2, R = 1, F1 = 2/3
    assert token_f1("a a", ["a"]) == pytest.approx(2 / 3)


def test_exact_str_match_is_case_sensitive_and_uses_the_output_regex():
    assert exact_str_match(" gelatine stick \n", ["gelatine stick"]) == 1.0
    assert exact_str_match("Gelatine stick", ["gelatine stick"]) == 0.0
    assert exact_str_match("three", ["three", "3"]) == 1.0
    regex = r"([-+]?\d+)[.]{0,1}$"  # BIG-bench operators
    assert exact_str_match("so it is 17.", ["17"], regex) == 1.0
    assert exact_str_match("no number", ["17"], regex) == 0.0


def test_task_metric_table_follows_the_paper():
    assert II_TASK_METRIC["synonyms"] == "contains"
    assert II_TASK_METRIC["taxonomy_animal"] == "exact_set"
    assert II_TASK_METRIC["common_concept"] == "f1"
    assert set(II_TASK_METRIC.values()) <= set(METRICS)


def test_choice_accuracy_argmax_and_ties():
    scores = [[-1.0, -0.5], [-2.0, -3.0, -0.1], [0.0, 0.0]]
    # argmaxes 1, 2, 0 (tie -> first); labels 1, 0, 1 -> 1 of 3 right
    assert choice_accuracy(scores, [1, 0, 1]) == pytest.approx(1 / 3)
    assert choice_accuracy(scores, [1, 2, 0]) == 1.0
    with pytest.raises(ValueError):
        choice_accuracy(scores, [0])
