"""Text style transfer (task.kind: style_transfer): RLPrompt's reward pieces against hand-worked
values, learning on a toy problem, and bad inputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import DATA_ROOT

from hardprompts.algorithms.base import RunContext
from hardprompts.config import load_config
from hardprompts.errors import ConfigError, DataError
from hardprompts.rewards import TrainingReward, zscore
from hardprompts.tasks import RLPromptReward, StablePromptReward
from hardprompts.tasks.style import (
    RewardModels,
    StyleSplit,
    StyleTransferTask,
    apply_template,
    bootstrap_max,
    output_token_cap,
    postprocess,
    resolve_style,
)

# ---------------------------------------------------------------------------------- pure pieces


def test_bootstrap_max_hand_worked():
    # N = 6 outputs, K = 3 groups of 2 consecutive outputs: max(1, 5), max(2, 0), max(7, 3)
    r = torch.tensor([[1.0, 5.0, 2.0, 0.0, 7.0, 3.0], [4.0, 4.0, 1.0, 9.0, 0.0, 0.0]])
    assert bootstrap_max(r, 3).tolist() == [[5.0, 2.0, 7.0], [4.0, 9.0, 0.0]]
    assert bootstrap_max(r, 3).mean(1).tolist() == pytest.approx([14 / 3, 13 / 3])
    with pytest.raises(ValueError, match="equal groups"):
        bootstrap_max(r, 4)


def test_zscore_per_input_over_bootstrap_maxima_hand_worked():
    # Two inputs (groups 0, 1), two prompts each, K = 2 bootstrap maxima per prompt.
    spread = torch.tensor([[1.0, 3.0], [5.0, 7.0], [2.0, 2.0], [4.0, 4.0]])
    reward = spread.mean(1)  # 2, 6, 2, 4
    groups = torch.tensor([0, 0, 1, 1])
    z = zscore(reward, groups=groups, spread=spread)
    # group 0: values 1, 3, 5, 7 -> mean 4, population std sqrt(5)
    s0 = math.sqrt(5.0)
    # group 1: values 2, 2, 4, 4 -> mean 3, std 1
    expected = [(2 - 4) / (s0 + 1e-4), (6 - 4) / (s0 + 1e-4), (2 - 3) / 1.0001, (4 - 3) / 1.0001]
    assert z.tolist() == pytest.approx(expected, rel=1e-6)
    # without spread the std would be over the two prompt rewards (2 and 1), not RLPrompt's
    assert zscore(reward, groups=groups)[0].item() == pytest.approx(-2 / 2.0001, rel=1e-6)


class _FixedTask:
    """A task returning given raw rewards (to check the shared shaping on exact numbers)."""

    kind = "fixed"
    deterministic_rewards = False
    target = None

    def __init__(self, rewards):
        self.rewards = rewards

    def train_rewards(self, prompts, reward, examples=None):
        return self.rewards


def test_shaping_after_the_zscore_hand_worked():
    from hardprompts.tasks import TaskRewards

    spread = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    raw = TaskRewards(spread.mean(1), torch.tensor([0, 0]), spread=spread, shaping=(-20.0, 80.0))
    out = TrainingReward(_FixedTask(raw), scale=5.0)(["a", "b"])
    z = (torch.tensor([2.0, 6.0]) - 4.0) / (math.sqrt(5.0) + 1e-4)
    # RLPrompt: percentile (z - 0) / (1 - 0), then -20 + 100 * percentile; the scale 5 is unused
    assert out.shaped.tolist() == pytest.approx((-20 + 100 * z).tolist(), rel=1e-6)
    assert out.task.tolist() == [2.0, 6.0]


def test_postprocess_and_length_cap():
    # RLPrompt's postprocess_output after the cut at the closing quote
    assert postprocess("  the food was great. and then  ", lower=False) == "the food was great."
    assert postprocess("Really?! no", lower=False) == "Really?"
    assert postprocess("The Staff Was Nice", lower=True) == "the staff was nice"
    assert postprocess("   ", lower=True) == ""
    # max(1.5 n, n + 10): n + 10 up to 20 tokens, then 1.5 n (rounded down)
    assert [output_token_cap(n, True, 40) for n in (4, 20, 21, 30)] == [14, 30, 31, 45]
    assert output_token_cap(30, False, 40) == 40
    assert apply_template('{prompt} "{x}" "', "Rewrite:", "a {b} c") == 'Rewrite: "a {b} c" "'


# --------------------------------------------------------------------- a toy generator and scorers

# The style token: " news" is one token of the tiny tokenizer and lies in the initial sparsemax
# support of PIN's policy over the tiny LM (12 tokens; " news" is sampled 7.5% of the time there).
STYLE_WORD = "news"


class CopyTarget:
    """A toy generating target: when the prompt holds STYLE_WORD it copies the input with
    "terrible" replaced by "great" (the target style); otherwise it writes seeded random words."""

    WORDS = ["the", "food", "was", "plot", "good", "bad", "film", "today"]

    def __init__(self):
        self.calls = []

    def generate(self, texts, *, num_samples=1, max_new_tokens=32, stop=None, do_sample=False,
                 top_k=None, temperature=1.0, seed=None):  # fmt: skip
        self.calls.append((list(texts), num_samples, max_new_tokens, stop, top_k, seed))
        gen = torch.Generator().manual_seed(seed or 0)
        out = []
        for text in texts:
            prompt, _, rest = text.partition(' "')
            source = rest.rsplit('" "', 1)[0]
            if STYLE_WORD in prompt.split():
                out.append([source.replace("terrible", "great") + '" and more'] * num_samples)
            else:
                idx = torch.randint(len(self.WORDS), (num_samples, 3), generator=gen).tolist()
                out.append([" ".join(self.WORDS[i] for i in row) for row in idx])
        return [[o.split(stop)[0] if stop else o for o in outs] for outs in out]  # cut at stop


class OverlapContent:
    """Content: 100 · |words shared| / |words of the source| (a toy, exact)."""

    def __call__(self, sources, outputs):
        vals = []
        for s, o in zip(sources, outputs, strict=True):
            a, b = s.split(), set(o.split())
            vals.append(100.0 * sum(w in b for w in a) / max(len(a), 1))
        return torch.tensor(vals)


class WordStyle:
    """Style: P(positive) = 0.9 with the word "great", else 0.1 (label 1 = positive)."""

    num_labels = 2
    id2label = {0: "negative", 1: "positive"}

    def probs(self, texts):
        p = torch.tensor([0.9 if "great" in t.split() else 0.1 for t in texts])
        return torch.stack([1 - p, p], dim=-1)


def toy_task(config, seed=0, sources=None) -> StyleTransferTask:
    sources = sources or [f"the food was terrible {w}" for w in ("today", "again", "here", "now")]
    split = StyleSplit("train", sources, None, "toy")
    dev = StyleSplit("dev", sources[:2], [[s.replace("terrible", "great")] for s in sources[:2]],
                     "toy")  # fmt: skip
    models = RewardModels(OverlapContent(), WordStyle())
    return StyleTransferTask(
        CopyTarget(), models, config.task, 1, {"train": split, "dev": dev, "test": dev}, seed=seed
    )


TOY = [
    "task.kind=style_transfer",
    "task.dataset=toy",
    "task.num_samples=2",
    "task.num_bootstraps=2",
    "task.num_repeats=4",
    "task.eval_num_samples=2",
    "task.control_output_length=false",
]


def test_train_rewards_pair_prompts_with_inputs_and_follow_rlprompt():
    cfg = load_config(None, TOY)
    task = toy_task(cfg)
    prompts = ["news", "x", "y", "z", "news", "news", "x", "y"]  # 8 prompts, 2 inputs
    out = task.train_rewards(prompts, RLPromptReward())
    assert out.group.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert out.spread.shape == (8, 2) and out.shaping == (-20.0, 80.0)
    # "news" copies in style: content 80 (4 of 5 words kept), style 90 -> R = 85 per output
    assert out.reward[0].item() == pytest.approx(85.0)
    assert out.reward[4].item() == out.reward[5].item() == pytest.approx(85.0)
    assert (out.reward[[1, 2, 3, 6, 7]] < 85.0).all()
    assert out.metrics["content"][0].item() == pytest.approx(80.0)
    # input 0 for the first 4 prompts, input 1 for the next 4: file order (RLPrompt's no shuffle)
    texts = [c[0] for c in task.target.calls]
    assert texts[0][0] == 'news "the food was terrible today" "'
    assert texts[1][0] == 'news "the food was terrible again" "'
    call = task.target.calls[0]
    assert call[1:5] == (4, 40, '"', 10)  # N = 2 x 2 samples, cap, stop, top-k 10
    # the next step continues with inputs 2 and 3, then wraps around
    task.train_rewards(prompts, RLPromptReward())
    task.train_rewards(prompts, RLPromptReward())
    assert [c[0][0].split('"')[1] for c in task.target.calls[-2:]] == [
        "the food was terrible today",
        "the food was terrible again",
    ]
    with pytest.raises(ConfigError, match="multiple of task.num_repeats"):
        task.train_rewards(prompts[:6], RLPromptReward())
    with pytest.raises(ConfigError, match="StablePromptReward"):
        task.train_rewards(prompts, StablePromptReward())


def test_evaluation_picks_the_best_output_and_reports_metrics():
    cfg = load_config(None, TOY)
    task = toy_task(cfg)
    results, records = task.evaluate_with_outputs(["news", "x"], "dev")
    good, bad = results
    assert good.metrics["content"] == pytest.approx(80.0)
    assert good.metrics["style"] == 100.0 and good.metrics["n"] == 2
    assert good.metrics["bleu"] == pytest.approx(100.0)  # equals the reference
    assert good.metrics["reference_content"] == pytest.approx(100.0)  # content vs the reference
    assert bad.metrics["reference_content"] < 100.0
    assert good.score > bad.score
    assert records[0][0] == {
        "input": "the food was terrible today",
        "output": "the food was great today",
        "gold": "the food was great today",
        "content": pytest.approx(80.0),  # 4 of the 5 source words kept
        "style": pytest.approx(90.0),
        "reward": pytest.approx(85.0),
        "style_correct": True,
    }
    assert good.metrics["fluency"] is None and good.metrics["joint"] is None  # no fluency model
    # evaluation draws no training randomness and gives the same outputs again
    state = task.generator.get_state()
    assert task.evaluate_with_outputs(["x"], "dev")[1][0] == records[1]
    assert torch.equal(task.generator.get_state(), state)


class ToyFluency:
    """A classifier-kind fluency judge: 100 · P(acceptable) = 90 for outputs holding "great"."""

    kind = "classifier"

    def __call__(self, texts):
        return torch.tensor([90.0 if "great" in t.split() else 10.0 for t in texts])


def test_joint_and_gm_with_a_classifier_fluency_model_hand_worked():
    cfg = load_config(None, TOY)
    task = toy_task(cfg)
    task.models.fluency = ToyFluency()
    good, bad = task.evaluate(["news", "x"], "dev")
    # both dev inputs are copied in style: content 80, style correct, fluent -> J = 80
    assert good.metrics["fluency"] == 100.0 and good.metrics["joint"] == pytest.approx(80.0)
    assert good.metrics["gm"] == pytest.approx((80.0 * 100.0 * 100.0) ** (1 / 3))
    # random words: never in style, never fluent -> J = 0, GM = 0
    assert bad.metrics["style"] == 0.0 and bad.metrics["joint"] == 0.0 and bad.metrics["gm"] == 0.0


def test_perplexity_term_enters_every_bootstrap_value_before_the_zscore(tiny_gpt2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hardprompts.rewards import prompt_log_perplexity
    from hardprompts.tasks import TaskRewards

    ref = (
        AutoModelForCausalLM.from_pretrained(tiny_gpt2),
        AutoTokenizer.from_pretrained(tiny_gpt2),
    )
    spread = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    raw = TaskRewards(spread.mean(1), torch.tensor([0, 0]), spread=spread, shaping=(0.0, 1.0))
    out = TrainingReward(_FixedTask(raw), perplexity_weight=2.0, reference=ref)(["the", "news"])
    lp = prompt_log_perplexity(["the", "news"], *ref)
    values = spread - 2.0 * lp[:, None]  # R_total of each bootstrap value
    z = (values.mean(1) - values.mean()) / (values.std(correction=0) + 1e-4)
    assert out.total.tolist() == pytest.approx((spread.mean(1) - 2.0 * lp).tolist(), rel=1e-6)
    assert out.shaped.tolist() == pytest.approx(z.tolist(), rel=1e-5)


def test_state_dict_resumes_the_input_order_and_samples():
    cfg = load_config(None, [*TOY, "task.shuffle=true"])
    a = toy_task(cfg)
    a.train_rewards(["x"] * 4, RLPromptReward())
    b = toy_task(cfg)
    b.load_state_dict(a.state_dict())
    ra, rb = (t.train_rewards(["x"] * 8, RLPromptReward()) for t in (a, b))
    assert torch.equal(ra.reward, rb.reward)
    assert a.target.calls[-1] == b.target.calls[-1]


def test_pin_learns_the_style_token(tiny_gpt2):
    """PIN finds the one prompt token that makes the toy generator copy the input in style."""
    cfg = load_config(
        None,
        [
            *TOY,
            "algorithm.name=pin",
            f"policy.model={tiny_gpt2}",
            "policy.device=cpu",
            "policy.prompt_length=1",
            "policy.mlp_hidden=256",
            "algorithm.residual_head=true",
            "algorithm.prompts_per_step=16",
            "algorithm.learning_rate=1e-3",
            "algorithm.token_filter_k=null",
            "algorithm.replay_batch_size=64",
        ],
    )
    task = toy_task(cfg)
    algo = cfg.algorithm.make(RunContext(cfg, task, Path("unused")))
    assert algo.eval_prompts() != [" " + STYLE_WORD]
    for step in range(60):
        values = algo.step(step)
    assert algo.eval_prompts() == [" " + STYLE_WORD]
    assert values["rewards/task_max"] == pytest.approx(85.0)
    assert values["rewards/content"] > 0 and values["rewards/style"] > 0


# ------------------------------------------------------------------------------------ bad input


def test_bad_inputs_are_one_clear_message(tmp_path):
    with pytest.raises(ConfigError, match=r"task.template: the template must contain \{x\}"):
        load_config(None, ["task.kind=style_transfer", "task.template={prompt} says"])
    with pytest.raises(ConfigError, match=r"must contain \{prompt\}"):
        load_config(None, ["task.kind=style_transfer", "task.template={x} says"])
    with pytest.raises(ConfigError, match=r"target_style 'happy' is not a style here; use 0..1 or"):
        resolve_style("happy", ["negative", "positive"], 2)
    with pytest.raises(ConfigError, match=r"target_style 2 is not a style"):
        resolve_style(2, None, 2)
    assert resolve_style("positive", ["negative", "positive"], 2) == 1
    # no sentence of the source style in a folder split
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("train", "dev", "test"):
        (folder / f"{name}.tsv").write_text("text\tlabel\nit was great\t1\nso good\t1\n")
    from hardprompts.tasks.style import load_style_splits

    cfg = load_config(None, ["task.kind=style_transfer", f"task.dataset={folder}"])
    with pytest.raises(DataError, match=r"train.tsv: the train split has no sentences of a style"):
        load_style_splits(cfg.task, 1, 2)["train"]()
    # algorithm settings that do not apply
    from hardprompts.tasks.style import _check_algorithm

    for bad, match in (
        ("algorithm.reward_scale=2", r"algorithm.reward_scale does not apply.*task.reward_shaping"),
        ("algorithm.prompts_per_step=6", r"multiple of task.num_repeats"),
    ):
        cfg = load_config(None, [*TOY, "algorithm.name=pin", bad])
        with pytest.raises(ConfigError, match=match):
            _check_algorithm(cfg)
    cfg = load_config(None, [*TOY, "algorithm.name=appo"])
    with pytest.raises(ConfigError, match="use rlprompt or pin"):
        _check_algorithm(cfg)


# ------------------------------------------------------------------------ presets on real data

TST = DATA_ROOT / "tst"


@pytest.fixture(scope="module")
def tst_dir() -> Path:
    if not (TST / "yelp" / "clean").is_dir():
        pytest.skip(f"style-transfer data not found at {TST}")
    return TST


def test_yelp_preset_slices_are_disjoint_and_documented(tst_dir):
    from hardprompts.tasks.style import load_style_splits, yelp_classifier_sentences

    cfg = load_config(None, ["task.kind=style_transfer", f"task.data_dir={tst_dir}"])
    splits = {k: v() for k, v in load_style_splits(cfg.task, 1, 2).items()}
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    root = tst_dir / "yelp" / "clean"
    negatives = [s.strip() for s in (root / "sentiment.dev.0.clean").read_text().splitlines()]
    held = yelp_classifier_sentences(root)
    assert 12000 < len(held) <= 13000 and len(held & set(negatives)) <= 6500  # 6,500 per style
    assert len(dev) == 16 and len(train) == len([s for s in negatives if s and s not in held]) - 16
    assert not set(train.sources) & set(dev.sources)
    assert not (set(train.sources) | set(dev.sources)) & held  # the classifier never saw them
    assert set(train.sources) <= set(negatives)
    assert len(test) == 500 and len(test.references) == 500
    assert test.sources[0] == (root / "sentiment.test.0.clean").read_text().splitlines()[0].strip()
    # the other direction reads the positive files
    pos = load_style_splits(cfg.task, 0, 2)["test"]()
    assert pos.source.endswith("sentiment.test.1.clean")


def test_shakespeare_preset_uses_its_100_shot_split(tst_dir):
    from hardprompts.tasks.style import load_style_splits

    cfg = load_config(None, ["task.kind=style_transfer", "task.dataset=shakespeare",
                             f"task.data_dir={tst_dir}"])  # fmt: skip
    splits = {k: v() for k, v in load_style_splits(cfg.task, 1, 2).items()}
    assert (len(splits["train"]), len(splits["dev"])) == (100, 100)
    assert "100-13" in splits["train"].source
    assert len(splits["test"]) == len(splits["test"].references) == 1462
    cfg = load_config(None, ["task.kind=style_transfer", "task.dataset=shakespeare",
                             "task.split_seed=16-42"])  # fmt: skip
    with pytest.raises(ConfigError, match="not a Shakespeare split; use one of 100-100"):
        load_style_splits(cfg.task, 1, 2)


def test_yelp_exclusion_matches_the_builtin_classifiers_record():
    import json

    import hardprompts
    from hardprompts.tasks import style

    record = Path(hardprompts.__file__).parent / "builtin" / "yelp-style" / "training_record.json"
    args = json.loads(record.read_text())["arguments"]
    assert args["seed"] == style._YELP_CLASSIFIER_SEED
    assert args["train_per_class"] + args["val_per_class"] == style._YELP_CLASSIFIER_PER_CLASS
