"""Each task family's numbers, pinned from the reference definitions (issue 22).

Scripted targets and scorers (no model unless a test says so) make every value computable by hand:
the instruction-induction metric of every ``ii/`` task (with a case where it and exact match
disagree), BIG-bench's ``output_regex``, which split each reward and metric reads, style transfer
in both directions, J with all three factors visible, corpus perplexity, BLEU and self-BLEU against
sacrebleu, best-of-N selection by the training reward, empty outputs, the content scorer's argument
order, and generation that starts with a newline. Where the project defines a number differently
from a reference, the test names the reference's value too.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import DATA

from hardprompts.config import load_config
from hardprompts.metrics import stableprompt_reward
from hardprompts.targets.generation import TextGenerator, cut_at_stop
from hardprompts.taskdata import Example, ExampleSplit, bbii_info, ii_info, ii_tasks
from hardprompts.tasks import RLPromptReward, StablePromptReward
from hardprompts.tasks.generation import GenerationTask, GenerationTaskConfig
from hardprompts.tasks.multiple_choice import MultipleChoiceTask, MultipleChoiceTaskConfig
from hardprompts.tasks.style import RewardModels, StyleSplit, StyleTransferTask, load_style_splits
from hardprompts.text_metrics import exact_match

II, BBII = DATA.parent / "ii", DATA.parent / "bbii"
needs_ii = pytest.mark.skipif(not (II / "induce").is_dir(), reason=f"no ii data at {II}")
needs_bbii = pytest.mark.skipif(not (BBII / "operators").is_dir(), reason=f"no bbii data at {BBII}")

# The instruction-induction paper's per-task metric (Honovich et al.'s evaluation code, as copied
# into APE's ``instruction_induction/utility.py`` TASK_TO_METRIC); every other task: exact match.
REFERENCE_METRIC = {
    "common_concept": "f1",
    "informal_to_formal": "f1",
    "orthography_starts_with": "es",
    "taxonomy_animal": "es",
    "synonyms": "contains",
}
ALL_II = [
    "active_to_passive", "antonyms", "cause_and_effect", "common_concept", "diff",
    "first_word_letter", "informal_to_formal", "larger_animal", "letters_list", "negation",
    "num_to_verbal", "orthography_starts_with", "rhymes", "second_word_letter",
    "sentence_similarity", "sentiment", "singular_to_plural", "sum", "synonyms", "taxonomy_animal",
    "translation_en-de", "translation_en-es", "translation_en-fr", "word_in_context",
]  # fmt: skip


# ----------------------------------------------------------------------------- scripted targets


class ScriptTarget:
    """A generating target: ``answer(text)`` is the raw continuation, cut as contract 2 says."""

    kind = "causal"

    def __init__(self, answer):
        self.answer = answer
        self.texts: list[str] = []

    def generate(self, texts, *, num_samples=1, max_new_tokens=32, stop=None, **_):
        self.texts += list(texts)
        return [[cut_at_stop(self.answer(t), stop)[0]] * num_samples for t in texts]


class ChoiceTarget:
    """A continuation-scoring target: option k of every text scores ``values[k]``."""

    kind = "causal"

    def __init__(self, values):
        self.values = values
        self.texts: list[str] = []

    def continuation_logprobs(self, texts, continuations, progress=None):
        self.texts += list(texts)
        return [[self.values[k] for k in range(len(c))] for c in continuations]


def one_example_task(name: str, answers: tuple[str, ...], prediction: str) -> GenerationTask:
    """``ii/<name>`` with its own metric, a one-example test split and a target that answers
    ``prediction`` (the task's stop string applies)."""
    cfg = GenerationTaskConfig(dataset=f"ii/{name}", data_dir=str(II))
    split = ExampleSplit("test", [Example({"x": "q"}, "q", answers)], "hand-made")
    return GenerationTask(
        ScriptTarget(lambda _: prediction), config=cfg, info=ii_info(name, root=II),
        splits={"test": split},
    )  # fmt: skip


def test_scored(task: GenerationTask) -> float:
    return task.evaluate(["p"], "test")[0].score


test_scored.__test__ = False  # a helper, not a test


# --------------------------------------------------------------- instruction induction, per task


@needs_ii
def test_every_ii_task_uses_the_papers_metric():
    assert sorted(ii_tasks(II)) == sorted(ALL_II)
    ours = {"es": "exact_set"}
    for name in ALL_II:
        want = ours.get(REFERENCE_METRIC.get(name, "em"), REFERENCE_METRIC.get(name, "em"))
        assert ii_info(name, root=II).metric == want, name


# Per non-em task: (answers, prediction, the task's own metric by hand); exact match gives 0.
DISAGREE = {
    # contains: the answer as a whole word inside a list of synonyms
    "synonyms": (("glad",), "happy, glad, cheerful", 1.0),
    # exact_set: the same words in another order
    "orthography_starts_with": (("bone, bad",), "bad, bone", 1.0),
    "taxonomy_animal": (("cat, dog, horse",), "horse cat dog", 1.0),
    # f1: pred {a, b, c} vs gold {a, b}: P = 2/3, R = 1, F1 = 2·(2/3)/(5/3) = 4/5
    "common_concept": (("involve fire",), "involve fire often", 0.8),
    # pred 2 words of gold 4 words: P = 1, R = 1/2, F1 = 2/3
    "informal_to_formal": (("please sit down now",), "please sit", 2 / 3),
}


@needs_ii
@pytest.mark.parametrize("name", sorted(DISAGREE))
def test_non_em_ii_task_scores_by_its_own_metric_where_exact_match_would_not(name):
    answers, prediction, own = DISAGREE[name]
    assert exact_match(prediction, answers) == 0.0  # plain exact match disagrees
    task = one_example_task(name, answers, prediction)
    assert test_scored(task) == pytest.approx(own)


@needs_ii
@pytest.mark.parametrize("name", sorted(set(ALL_II) - set(REFERENCE_METRIC)))
def test_em_ii_task_normalises_but_does_not_credit_containment(name):
    # The paper's exact match: "  Answer." normalises to the answer; "answer extra" does not (the
    # contains metric would credit it).
    assert test_scored(one_example_task(name, ("Big Dog",), "  big-dog.")) == 1.0  # "-" -> " "
    assert test_scored(one_example_task(name, ("Big Dog",), "  Big Dog.")) == 1.0
    assert test_scored(one_example_task(name, ("big dog",), "big dog barks")) == 0.0
    # only the text before the first "." counts: "Big dog. It barks" is "big dog"
    assert test_scored(one_example_task(name, ("big dog",), "Big dog. It barks")) == 1.0


@needs_ii
def test_f1_is_the_best_over_the_acceptable_answers_not_the_last():
    # common_concept lists several concepts: F1 against "a b c" is 1, against "a z" it is
    # 2·(1/3)(1/2)/(1/3 + 1/2) = 0.4; the best counts, whatever the order.
    for answers in (("a b c", "a z"), ("a z", "a b c")):
        assert test_scored(one_example_task("common_concept", answers, "a b c")) == 1.0
    assert test_scored(one_example_task("common_concept", ("a z",), "a b c")) == pytest.approx(0.4)


@needs_ii
def test_answer_that_starts_with_a_newline_is_scored_as_the_reference_scores_it():
    # The reference strips, then keeps the first line: "\n alligator\nmore" -> "alligator" = 1.
    task = one_example_task("larger_animal", ("alligator",), "\n alligator\nand more")
    assert task.stop == "\n"
    assert test_scored(task) == 1.0
    assert cut_at_stop("\n alligator\nmore", "\n") == ("\n alligator", True)
    assert cut_at_stop("  \n", "\n") == ("  \n", False)  # only whitespace: no stop found yet
    assert cut_at_stop('x" y', '"') == ("x", True)


@needs_ii
def test_empty_generated_answer_scores_zero_for_every_ii_metric():
    for name in ("antonyms", "synonyms", "taxonomy_animal", "common_concept"):
        assert test_scored(one_example_task(name, ("cold",), "")) == 0.0, name
        assert test_scored(one_example_task(name, ("cold",), "\n")) == 0.0, name


# --------------------------------------------------------------------------- BIG-bench generation


@needs_bbii
def test_bbii_generation_uses_the_tasks_output_regex_and_exact_str_match():
    info = bbii_info("operators", root=BBII)
    assert info.output_regex == r"([-+]?\d+)[.]{0,1}$" and info.stop == "\n"
    cfg = GenerationTaskConfig(dataset="bbii/operators", data_dir=str(BBII))
    split = ExampleSplit("test", [Example({"x": "q"}, "q", ("17",))], "hand-made")

    def score(prediction: str) -> float:
        task = GenerationTask(ScriptTarget(lambda _: prediction), config=cfg, info=info,
                              splits={"test": split})  # fmt: skip
        assert task.metric_name == "exact_str_match"
        return test_scored(task)

    assert score("so it is 17.") == 1.0  # the regex keeps "17"; plain exact_str_match gives 0
    assert score("17 apples") == 0.0  # regex anchored at the end: no match -> ""
    assert score(" 17\nnext line") == 1.0  # cut at the stop string, then stripped


@needs_bbii
def test_bbii_exact_str_match_is_case_sensitive_where_ii_em_is_not():
    cfg = GenerationTaskConfig(dataset="bbii/word_sorting", data_dir=str(BBII))
    info = bbii_info("word_sorting", root=BBII)
    split = ExampleSplit("test", [Example({"x": "q"}, "q", ("apple banana",))], "hand-made")
    task = GenerationTask(ScriptTarget(lambda _: "Apple banana"), config=cfg, info=info,
                          splits={"test": split})  # fmt: skip
    assert test_scored(task) == 0.0  # em after normalisation would give 1


# ------------------------------------------------------------------ which split each number reads


def hand_split(name: str, n: int, answers=True) -> ExampleSplit:
    if answers:
        ex = [Example({"x": f"{name}-{i}"}, f"{name}-{i}", (f"ans-{name}-{i}",)) for i in range(n)]
    else:
        ex = [Example({"x": f"{name}-{i}"}, f"{name}-{i}", choices=("a", "b"), label=i % 2)
              for i in range(n)]  # fmt: skip
    return ExampleSplit(name, ex, "hand-made")


def test_generation_train_rewards_read_train_only_and_eval_reads_its_split():
    splits = {s: hand_split(s, n) for s, n in (("train", 3), ("dev", 2), ("test", 4))}
    # The target answers correctly only for train-1: reward 30 · 1/3 from train alone.
    target = ScriptTarget(lambda t: "ans-train-1" if "train-1" in t else "no")
    task = GenerationTask(target, config=GenerationTaskConfig(), splits=splits)
    out = task.train_rewards(["p"], StablePromptReward(30.0, 0.01))
    assert out.reward.tolist() == pytest.approx([10.0])
    assert all("train-" in t for t in target.texts) and len(target.texts) == 3
    target.texts.clear()
    out = task.train_rewards(["p"], StablePromptReward(30.0, 0.01), examples=[1])
    assert out.reward.tolist() == pytest.approx([30.0])
    assert len(target.texts) == 1 and "train-1" in target.texts[0]
    target.texts.clear()
    assert task.evaluate(["p"], "dev")[0].metrics["n"] == 2
    assert all("dev-" in t for t in target.texts)
    target.texts.clear()
    task.evaluate(["p"], "test")
    assert all("test-" in t for t in target.texts) and len(target.texts) == 4


def test_multiple_choice_rewards_read_train_only_with_stableprompts_formula():
    splits = {s: hand_split(s, n, answers=False) for s, n in (("train", 4), ("dev", 2))}
    target = ChoiceTarget([-1.0, -3.0])  # option 0 always: right on labels 0 (train-0, train-2)
    task = MultipleChoiceTask(target, config=MultipleChoiceTaskConfig(), splits=splits)
    out = task.train_rewards(["p"], StablePromptReward(30.0, 0.01))
    # acc 1/2; margins: +2 (label 0), -2 (label 1) -> mean 0: R = 30 · 0.5 + 0.01 · 0 = 15
    assert out.reward.tolist() == pytest.approx([15.0])
    # StablePrompt's BBII code weighs 3 · acc + 0.05 · margin: 1.5 here (the project uses 30/0.01)
    assert float(stableprompt_reward(torch.tensor([[-1.0, -3.0]] * 4),
                 torch.tensor([0, 1, 0, 1]), 3.0, 0.05)) == pytest.approx(1.5)  # fmt: skip
    assert all("train-" in t for t in target.texts) and len(target.texts) == 4
    # the options are scored after the choice prefix (one space)
    assert task.applied("p", splits["train"].examples[0])[1] == [" a", " b"]
    target.texts.clear()
    results, records = task.evaluate_with_outputs(["p"], "dev")
    assert results[0].metrics["accuracy"] == 0.5 and all("dev-" in t for t in target.texts)
    # the written output is the best-scored option ("a": -1 > -3), correct where the label is 0
    assert [(r["output"], r["correct"]) for r in records[0]] == [("a", True), ("a", False)]


# --------------------------------------------------------------------------------- style transfer

TOY = [
    "task.kind=style_transfer",
    "task.dataset=toy",
    "task.num_samples=2",
    "task.num_bootstraps=1",
    "task.num_repeats=1",
    "task.eval_num_samples=3",
    "task.control_output_length=false",
]


class Candidates:
    """A generating target that returns given candidates for every text (sampling ignored)."""

    def __init__(self, candidates):
        self.candidates = candidates
        self.texts: list[str] = []

    def generate(self, texts, *, num_samples=1, stop=None, **_):
        self.texts += list(texts)
        out = (self.candidates * num_samples)[:num_samples]
        return [list(out) for _ in texts]


class TableContent:
    """Content from a table keyed by output; records the (source, output) order it was given."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def __call__(self, sources, outputs):
        self.calls.append((list(sources), list(outputs)))
        return torch.tensor([float(self.table.get(o, 0.0)) for o in outputs])


class SourceOverlap:
    """Asymmetric content: 100 · (share of the first argument's words found in the second)."""

    def __call__(self, sources, outputs):
        return torch.tensor([100.0 * sum(w in o.split() for w in s.split()) / len(s.split())
                             for s, o in zip(sources, outputs, strict=True)])  # fmt: skip


class TableStyle:
    """P(style 1) from a table keyed by text (default 0.5); style 0 gets the rest."""

    num_labels = 2
    id2label = {0: "negative", 1: "positive"}

    def __init__(self, table):
        self.table = table

    def probs(self, texts):
        p = torch.tensor([float(self.table.get(t, 0.5)) for t in texts])
        return torch.stack([1 - p, p], dim=-1)


def style_task(target, content, style, target_style=1, sources=("the source",), refs=None,
               overrides=()) -> StyleTransferTask:  # fmt: skip
    cfg = load_config(None, [*TOY, *overrides])
    dev = StyleSplit("dev", list(sources), refs, "hand-made")
    return StyleTransferTask(target, RewardModels(content, style), cfg.task, target_style,
                             {"train": dev, "dev": dev, "test": dev})  # fmt: skip


def test_style_transfer_both_directions_with_a_direction_dependent_classifier():
    # "great" is positive (P(1) = 0.9); "awful" negative (P(1) = 0.2). Same outputs, both targets.
    style = TableStyle({"great": 0.9, "awful": 0.2})
    content = TableContent({"great": 50.0, "awful": 50.0})
    to_pos = style_task(Candidates(["great", "awful", "awful"]), content, style, target_style=1)
    to_neg = style_task(Candidates(["great", "awful", "awful"]), content, style, target_style=0)
    _, pos_style, _, pos_r = to_pos._scores(["s", "s"], ["great", "awful"])
    _, neg_style, _, neg_r = to_neg._scores(["s", "s"], ["great", "awful"])
    assert pos_style.tolist() == pytest.approx([90.0, 20.0])  # 100 · P(1 | y)
    assert neg_style.tolist() == pytest.approx([10.0, 80.0])  # 100 · P(0 | y)
    assert pos_r.tolist() == pytest.approx([70.0, 35.0]) and neg_r.tolist() == pytest.approx(
        [30.0, 65.0]
    )
    # evaluation: best of 3 by the reward picks the in-style output, and style accuracy follows it
    pos = to_pos.evaluate_with_outputs(["p"], "dev")[1][0][0]
    neg = to_neg.evaluate_with_outputs(["p"], "dev")[1][0][0]
    assert (pos["output"], pos["style_correct"]) == ("great", True)
    assert (neg["output"], neg["style_correct"]) == ("awful", True)
    # training reward in the 1 -> 0 direction: (content + 100 · P(0)) / 2, max over the group
    out = to_neg.train_rewards(["p"], RLPromptReward(), examples=[0])
    assert out.reward.tolist() == pytest.approx([65.0])
    assert out.metrics["style"].tolist() == pytest.approx([(10.0 + 80.0) / 2])


def test_style_folder_inputs_are_the_other_styles_sentences_in_both_directions(tmp_path):
    rows = "text\tlabel\nnice place\t1\nbad food\t0\ngreat staff\t1\n"
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.tsv").write_text(rows)
    cfg = load_config(None, [*TOY, f"task.data_dir={tmp_path}", f"task.dataset={tmp_path}",
                             "task.split_seed=null", "task.text_column=text"])  # fmt: skip
    to_pos = load_style_splits(cfg.task, 1, 2)["train"]()
    to_neg = load_style_splits(cfg.task, 0, 2)["train"]()
    assert to_pos.sources == ["bad food"]
    assert to_neg.sources == ["nice place", "great staff"]


def test_best_of_n_is_chosen_by_the_training_reward_not_by_style_or_content():
    # A: content 90, style 20 -> R 55; B: content 40, style 95 -> R 67.5; C: 70, 70 -> R 70
    content = TableContent({"A": 90.0, "B": 40.0, "C": 70.0})
    style = TableStyle({"A": 0.2, "B": 0.95, "C": 0.7})
    task = style_task(Candidates(["A", "B", "C"]), content, style)
    row = task.evaluate_with_outputs(["p"], "dev")[1][0][0]
    assert row["output"] == "C" and row["reward"] == pytest.approx(70.0)
    assert (row["content"], row["style"]) == (pytest.approx(70.0), pytest.approx(70.0))


def test_empty_outputs_are_dropped_before_selection_and_kept_when_all_are_empty():
    # RLPrompt's selector drops empty outputs; the empty one would win here (content 100).
    content = TableContent({"": 100.0, "ok": 10.0})
    style = TableStyle({"": 0.9, "ok": 0.5})
    row = style_task(Candidates(["", "ok", ""]), content, style).evaluate_with_outputs(
        ["p"], "dev")[1][0][0]  # fmt: skip
    assert row["output"] == "ok" and row["reward"] == pytest.approx(30.0)
    row = style_task(Candidates(["", "   "]), content, style).evaluate_with_outputs(
        ["p"], "dev")[1][0][0]  # fmt: skip
    assert row["output"] == "" and row["content"] == 100.0  # only empty ones: scored as ""


def test_content_scorer_gets_sources_first_then_outputs():
    # RLPrompt: bert_scorer.score(output_texts, source_texts) — candidates = outputs, references =
    # sources; ours is content(sources, outputs). An asymmetric scorer shows the order.
    task = style_task(Candidates(["the cat"]), SourceOverlap(), TableStyle({}),
                      sources=("the cat sat down",))  # fmt: skip
    content, _, _, _ = task._scores(["the cat sat down"], ["the cat"])
    assert content.tolist() == pytest.approx([50.0])  # 2 of the 4 source words kept (swapped: 100)
    table = TableContent({"the cat": 1.0})
    task = style_task(Candidates(["the cat"]), table, TableStyle({}), sources=("src text",),
                      refs=[["a reference"]])  # fmt: skip
    task.evaluate(["p"], "dev")
    assert table.calls[0] == (["src text"] * 3, ["the cat"] * 3)  # 3 candidates
    assert table.calls[1] == (
        ["a reference"],
        ["the cat"],
    )  # reference_content: (reference, output)


class HandFluency:
    """Classifier fluency: 100 · P(acceptable) from a table keyed by output."""

    kind = "classifier"

    def __init__(self, table):
        self.table = table

    def __call__(self, texts):
        return torch.tensor([float(self.table[t]) for t in texts])


class HandPerplexity:
    """Summed NLL and token counts from a table keyed by output."""

    kind = "perplexity"

    def __init__(self, table):
        self.table = table

    def nll(self, texts):
        return (torch.tensor([self.table[t][0] for t in texts]),
                torch.tensor([self.table[t][1] for t in texts]))  # fmt: skip


def test_joint_score_is_the_mean_of_per_output_products_with_every_factor_visible():
    # (content, style correct, fluency) = (80, T, 90), (60, T, 30), (10, F, 55), (40, T, 20);
    # fluent = the classifier's 100 · P(acceptable) > 50
    rows = [
        {"output": o, "content": c, "style_correct": s, "reward": 1.0, "style": 1.0}
        for o, c, s in (("a", 80.0, True), ("b", 60.0, True), ("c", 10.0, False), ("d", 40.0, True))
    ]
    task = style_task(Candidates(["x"]), TableContent({}), TableStyle({}),
                      sources=("s1", "s2", "s3", "s4"))  # fmt: skip
    task.models.fluency = HandFluency({"a": 90.0, "b": 30.0, "c": 55.0, "d": 20.0})
    m = task._metrics(rows, "dev", 0.0)
    assert m["content"] == pytest.approx(47.5)
    assert m["style"] == pytest.approx(75.0) and m["fluency"] == pytest.approx(50.0)
    # J = mean_i c_i · s_i · f_i = (80 + 0 + 0 + 0) / 4 (RLPrompt's joint_scores.mean())
    assert m["joint"] == pytest.approx(20.0)
    # not without fluency (45), without style (22.5), without content (25), nor the product of
    # the means (47.5 · 0.75 · 0.5 = 17.8)
    for wrong in (45.0, 22.5, 25.0, 47.5 * 0.75 * 0.5):
        assert m["joint"] != pytest.approx(wrong)
    # GM = exp(mean(log c, log s, log f)) of the three percentages
    assert m["gm"] == pytest.approx((47.5 * 75.0 * 50.0) ** (1 / 3))


def test_corpus_perplexity_not_the_mean_of_per_sentence_ones():
    rows = [{"output": o, "content": 1.0, "style_correct": True, "reward": 1.0, "style": 1.0}
            for o in ("a", "b", "")]  # fmt: skip
    task = style_task(Candidates(["x"]), TableContent({}), TableStyle({}),
                      sources=("s1", "s2", "s3"))  # fmt: skip
    # nll sums 2 and 3 over 1 and 3 tokens; the empty output has no tokens
    task.models.perplexity = HandPerplexity({"a": (2.0, 1), "b": (3.0, 3), "": (0.0, 0)})
    ppl = task._metrics(rows, "dev", 0.0)["output_perplexity"]
    assert ppl == pytest.approx(math.exp(5 / 4))  # exp(Σ nll / Σ tokens) = 3.49
    assert ppl != pytest.approx((math.exp(2.0) + math.exp(1.0)) / 2)  # mean per sentence: 5.05
    assert ppl != pytest.approx(math.exp((2.0 + 1.0) / 2))  # exp of the mean per-token NLL: 4.48


def test_rlprompts_perplexity_weights_each_sentence_by_its_length_but_skips_its_first_token(
    tiny_gpt2,
):
    # RLPrompt's evaluator: nll_i = len_i · loss_i, where loss_i is GPT-2's mean over the len_i - 1
    # tokens after the first (no BOS), ppl = exp(Σ nll_i / Σ len_i). Ours scores every token after
    # the BOS: exp(Σ NLL / Σ tokens). Both named here on the tiny LM.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hardprompts.scorers.fluency import PerplexityFluency

    texts = ["the food was great", "bad"]
    ours = PerplexityFluency(str(tiny_gpt2), device="cpu")
    sums, counts = ours.nll(texts)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    total_nll = total_len = ref_nll = ref_len = 0.0
    with torch.no_grad():
        for t in texts:
            body = tok(t, add_special_tokens=False)["input_ids"]  # GPT-2 adds no BOS
            ids = torch.tensor([[tok.bos_token_id, *body]])
            logp = model(ids).logits[0, :-1].log_softmax(-1)
            total_nll += float(-logp.gather(-1, ids[0, 1:, None]).sum())
            total_len += len(body)
            if len(body) > 1:  # a one-token text has a NaN loss there, dropped from both sums
                loss = model(torch.tensor([body]), labels=torch.tensor([body])).loss.item()
                ref_nll += len(body) * loss
                ref_len += len(body)
    assert float(sums.sum()) == pytest.approx(total_nll, rel=1e-5)
    assert int(counts.sum()) == total_len
    ours_ppl = math.exp(total_nll / total_len)
    rlprompt_ppl = math.exp(ref_nll / ref_len)
    assert ours_ppl != pytest.approx(rlprompt_ppl)


def test_bleu_and_self_bleu_against_sacrebleu_on_hand_made_outputs():
    sacrebleu = pytest.importorskip("sacrebleu")
    from hardprompts.scorers import bleu, self_bleu
    from hardprompts.scorers.bleu import corpus_bleu

    outputs = ["the food was great .", "the staff is so friendly", "bad"]
    refs = ["the food was really great .", "the staff is friendly", "it was bad"]
    sources = ["the food was awful today .", "the staff is rude", "it was good food"]
    each = [sacrebleu.sentence_bleu(o, [r]).score for o, r in zip(outputs, refs, strict=True)]
    # RLPrompt: np.mean of sentence_bleu per output (not corpus BLEU)
    assert bleu(outputs, refs) == pytest.approx(sum(each) / 3)
    assert corpus_bleu(outputs, refs) == pytest.approx(sacrebleu.corpus_bleu(outputs, [refs]).score)
    assert bleu(outputs, refs) != pytest.approx(corpus_bleu(outputs, refs))
    own = [sacrebleu.sentence_bleu(o, [s]).score for o, s in zip(outputs, sources, strict=True)]
    assert self_bleu(outputs, sources) == pytest.approx(sum(own) / 3)
    # through the task: bleu against the references, self_bleu against the sources
    task = style_task(Candidates(["x"]), TableContent({}), TableStyle({}), sources=tuple(sources),
                      refs=[[r] for r in refs])  # fmt: skip
    rows = [{"output": o, "content": 1.0, "style_correct": True, "reward": 1.0, "style": 1.0}
            for o in outputs]  # fmt: skip
    m = task._metrics(rows, "dev", 0.0)
    assert m["bleu"] == pytest.approx(sum(each) / 3)
    assert m["self_bleu"] == pytest.approx(sum(own) / 3)


# ------------------------------------------------------------------ a leading newline, for real


class ScriptedLM(torch.nn.Module):
    """A causal LM wrapper whose greedy continuation is ``script`` (token ids), whatever the text.

    The logits of the wrapped tiny model are replaced by a one-hot of the next scripted token, chosen
    by how many tokens follow the text (from the position ids).
    """

    def __init__(self, inner, text_len: int, script: list[int]):
        super().__init__()
        self.inner, self.text_len, self.script = inner, text_len, script
        self.config = inner.config

    def __getattr__(self, name):  # dtype, get_output_embeddings, ...: the wrapped model's
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, use_cache=None,
                cache=None, **kw):  # fmt: skip
        from hardprompts.modeling import cache_keyword

        out = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids, use_cache=use_cache,
                         **{cache_keyword(self.inner): cache}, **kw)  # fmt: skip
        last = int(position_ids[0, -1]) if position_ids is not None else input_ids.shape[1] - 1
        step = last + 1 - self.text_len
        logits = torch.full_like(out.logits, -1e4)
        logits[:, -1, self.script[max(0, min(step, len(self.script) - 1))]] = 0.0
        out.logits = logits
        return out


def test_generator_does_not_stop_at_a_leading_newline(tiny_gpt2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    inner = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    text = "Input: crocodile\nOutput:"
    n = len(tok(text)["input_ids"])  # with the BOS the generator adds
    script = tok("\n great\nnext", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    # Copying the cache per row: the scripted logits do not come from attention, so the shared-prefix
    # self-check (which compares attention paths) does not apply; the cut is the same on both paths.
    gen = TextGenerator(ScriptedLM(inner, n, script), tok, max_length=64, share_prefix=False)
    [[answer]] = gen.generate([text], max_new_tokens=8, stop="\n")
    assert answer.strip() == "great"  # the old cut at the first "\n" gave ""
    [[whole]] = gen.generate([text], max_new_tokens=8, stop=None)
    assert whole == "\n great\nnext"


def test_served_generation_cuts_a_leading_newline_as_in_process(tiny_gpt2):
    from hardprompts.targets.openai import _cut

    assert _cut("\n great\nnext", "\n") == "\n great"
    assert _cut('a "b', '"') == "a "


def test_ii_template_and_coefficients_are_documented_where_users_read_them():
    # The ii/ template is ours, not StablePrompt's "{prompt}\nInput : {x}\nOutput : " (with spaces
    # before the colons and after "Output :"): the field doc says so.
    from hardprompts.tasks.base import StablePromptReward as Spec

    doc = GenerationTaskConfig.model_fields["template"].description or ""
    assert "Input : " in doc and "StablePrompt" in doc
    mc = MultipleChoiceTaskConfig.model_fields["template"].description or ""
    assert "3" in mc and "0.05" in mc  # StablePrompt's BBII weights, beside ours
    assert Spec().accuracy_weight == 30.0 and Spec().margin_weight == 0.01


def test_yelp_pin_style_config_does_not_claim_pins_shaping_for_shakespeare():
    text = (Path(__file__).resolve().parents[1] / "configs" / "yelp_pin_style.yaml").read_text()
    assert "keeps PIN's" not in text


# ------------------------------------------------------------------------- ii data, fast checks


@needs_ii
def test_cause_and_effect_answer_is_the_cause_in_both_orders():
    import json

    from hardprompts.taskdata import load_ii

    record = json.loads((II / "execute" / "cause_and_effect.json").read_text())["examples"]["1"]
    first, second = load_ii("cause_and_effect", "test", root=II).examples[:2]
    assert first.input == f"Sentence 1: {record['cause']} Sentence 2: {record['effect']}"
    assert second.input == f"Sentence 1: {record['effect']} Sentence 2: {record['cause']}"
    assert first.answers == second.answers == (record["cause"],)


@needs_ii
def test_ii_train_and_dev_are_disjoint_and_empty_answers_are_dropped():
    from hardprompts.taskdata import load_ii

    train = load_ii("translation_en-es", "train", root=II, train_size=400, dev_size=50)
    dev = load_ii("translation_en-es", "dev", root=II, train_size=400, dev_size=50)
    assert not {e.input for e in train.examples} & {e.input for e in dev.examples}
    # induce/translation_en-es.json lists "" among some accepted translations: never an answer
    assert all(a.strip() for e in train.examples + dev.examples for a in e.answers)


class LogitTarget:
    """A label-word target: class logits [P, N, C] from a table keyed by text; records texts."""

    verbalizers = [" no", " yes"]

    def __init__(self, table):
        self.table, self.texts = table, []

    def score(self, prompts, texts, progress=None):
        self.texts += list(texts)
        row = torch.tensor([self.table[t] for t in texts])
        return row[None].expand(len(prompts), -1, -1).clone()


def test_classification_train_rewards_read_train_only():
    from hardprompts.tasks.classification import ClassificationTask
    from hardprompts.tasks.data import Split

    table = {"t0": [0.0, 2.0], "t1": [0.0, 1.0], "d0": [5.0, 0.0], "s0": [5.0, 0.0]}
    splits = {
        "train": Split("train", ["t0", "t1"], [1, 0], "hand-made"),
        "dev": Split("dev", ["d0"], [0], "hand-made"),
        "test": Split("test", ["s0"], [1], "hand-made"),
    }
    target = LogitTarget(table)
    task = ClassificationTask(target, template="{x} {prompt}", splits=splits)
    out = task.train_rewards(["p"], StablePromptReward(30.0, 0.01))
    # acc 1/2; margins +2 (t0, label 1) and -1 (t1, label 0): R = 15 + 0.01 · 0.5 = 15.005
    assert out.reward.tolist() == pytest.approx([15.005])
    assert target.texts == ["t0", "t1"]
    target.texts.clear()
    out = task.train_rewards(["p"], StablePromptReward(30.0, 0.01), examples=[1])
    assert out.reward.tolist() == pytest.approx([0.01 * -1.0]) and target.texts == ["t1"]
    assert task.evaluate(["p"], "dev")[0].score == 1.0
    assert task.evaluate(["p"], "test")[0].score == 0.0
