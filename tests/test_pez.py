"""PEZ and the differentiable prompt-embedding path: hand-worked updates, exactness, learning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_models import make_tiny_gpt2

from hardprompts.algorithms.pez import lr_factor, projected_gradient_step
from hardprompts.config import config_from_dict, load_config
from hardprompts.errors import ConfigError
from hardprompts.metrics import prompt_perplexity
from hardprompts.modeling import load_lm, load_tokenizer
from hardprompts.targets.embeds import EmbeddingScorer, prompt_nll
from hardprompts.targets.hf import HFTarget
from hardprompts.tasks import build_task
from hardprompts.training import RunContext, run

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "the movie was great",
    "a terrible film , it was bad and boring",
    "ok",
    "the review says the food was great but the service was terrible " * 4,  # truncated
    "news about sports",
]


# ---------------------------------------------------------------------- the update, by hand


def test_update_applies_gradient_taken_at_the_projection():
    # E: three tokens in 2-d. P = (0.9, 0.2) projects (cosine) onto token 0 = (1, 0).
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    prompt = torch.nn.Parameter(torch.tensor([[0.9, 0.2]]))
    target = torch.tensor([[0.0, 2.0]])

    def loss_at(projected, ids):  # ½‖P′ − y‖², gradient P′ − y
        return 0.5 * ((projected - target) ** 2).sum()

    ids, loss = projected_gradient_step(prompt, table, None, "cosine", loss_at)
    assert ids.tolist() == [0]
    assert loss.item() == pytest.approx(0.5 * (1 + 4))  # at P′ = (1, 0), not at P
    # ∂loss/∂P′ = (1, 0) − (0, 2) = (1, −2); at P it would have been (0.9, −1.8).
    torch.testing.assert_close(prompt.grad, torch.tensor([[1.0, -2.0]]))
    torch.optim.SGD([prompt], lr=0.1).step()
    torch.testing.assert_close(prompt.data, torch.tensor([[0.8, 0.4]]))  # P − 0.1·(1, −2)


def test_projection_respects_the_allowed_mask():
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    prompt = torch.nn.Parameter(torch.tensor([[0.9, 0.2]]))
    allowed = torch.tensor([False, True, True])  # token 0, the nearest, is not allowed
    ids, _ = projected_gradient_step(
        prompt, table, allowed, "cosine", lambda p, i: (p * torch.tensor([[1.0, 1.0]])).sum()
    )
    assert ids.tolist() == [1]  # cos 0.217 beats token 2's −0.977
    torch.testing.assert_close(prompt.grad, torch.tensor([[1.0, 1.0]]))


# ---------------------------------------------------------------------- embeddings path is exact


def _target(path, kind, template) -> HFTarget:
    return HFTarget(
        load_lm(str(path), kind, device="cpu"),
        load_tokenizer(str(path)),
        kind,
        template,
        [" terrible", " great"],
        max_length=40,
    )


@pytest.mark.parametrize(
    "kind,template",
    [
        ("causal", "{x} {prompt}"),
        ("causal", "{prompt} Input: {x} Output:"),
        ("masked", "{x} {prompt} {mask} ."),
        ("masked", "{mask} {prompt} {x}"),
    ],
)
def test_embedding_scores_equal_token_scores(request, kind, template):
    path = request.getfixturevalue("tiny_gpt2" if kind == "causal" else "tiny_roberta")
    target = _target(path, kind, template)
    scorer = EmbeddingScorer(target, batch_size=3)  # several chunks, sorted by length
    for p in ["the language feels", "great great film"]:
        embeds = scorer.embedding_table[scorer.prompt_ids(p)][None].clone().requires_grad_()
        got = scorer.score(embeds, TEXTS)
        want = target.score([p], TEXTS)
        assert got.shape == (1, len(TEXTS), 2)
        torch.testing.assert_close(got.detach(), want, atol=1e-5, rtol=1e-5)
        got[0, :, 1].sum().backward()  # gradients reach the embeddings
        assert embeds.grad is not None and embeds.grad.abs().sum() > 0


def test_embedding_scores_of_several_prompts_at_once(tiny_gpt2):
    target = _target(tiny_gpt2, "causal", "{x} {prompt}")
    scorer = EmbeddingScorer(target, batch_size=4)
    prompts = ["great film", "the film", "terrible great", "was great"]
    ids = [scorer.prompt_ids(p) for p in prompts]  # two of T = 5, two of T = 2
    for group in (prompts[:2], prompts[2:]):
        group_ids = torch.tensor([scorer.prompt_ids(p) for p in group])
        got = scorer.score(scorer.embedding_table[group_ids], TEXTS)  # [2, N, C]
        torch.testing.assert_close(got, target.score(group, TEXTS), atol=1e-5, rtol=1e-5)
    assert [scorer.prompt_text(i) for i in ids] == prompts


def test_prompt_nll_equals_reported_perplexity(tiny_gpt2):
    model, tok = load_lm(str(tiny_gpt2), "causal", device="cpu"), load_tokenizer(str(tiny_gpt2))
    ids = torch.tensor([tok("the language feels", add_special_tokens=False)["input_ids"]])
    table = model.get_input_embeddings().weight
    for through in (True, False):
        embeds = table[ids].clone().requires_grad_()
        nll = prompt_nll(model, embeds, ids, tok.bos_token_id, through_token=through)
        want = prompt_perplexity(["the language feels"], model, tok)[0]
        assert nll.exp().item() == pytest.approx(want, rel=1e-5)
        nll.sum().backward()
        assert embeds.grad.abs().sum() > 0


def _shared_row_nll_gradient(model, ids: list[int], bos: int) -> torch.Tensor:
    """Autograd reference: ∂NLL/∂(table rows of the prompt tokens) when the prompt's inputs and
    the output layer are one shared table W (a tied model, differentiated as a whole)."""
    w = model.get_input_embeddings().weight.detach().clone().requires_grad_()
    seq = torch.tensor([bos, *ids])
    hidden = model.base_model(inputs_embeds=w[seq[:-1]][None]).last_hidden_state[0]  # [T, d]
    logp = (hidden @ w.T).log_softmax(-1)  # tied output layer, no bias (GPT-2)
    nll = -logp.gather(-1, seq[1:, None]).mean()
    (grad,) = torch.autograd.grad(nll, w)
    return grad[torch.tensor(ids)]  # [T, d]; a repeated token's row holds its total


@pytest.mark.parametrize("text", ["the language feels", "the news the"])
def test_prompt_nll_gradient_is_exact_with_shared_embeddings(sharp_gpt2, text):
    model, tok = load_lm(str(sharp_gpt2), "causal", device="cpu"), load_tokenizer(str(sharp_gpt2))
    table = model.get_input_embeddings().weight
    assert table.data_ptr() == model.get_output_embeddings().weight.data_ptr()  # tied
    ids = tok(text, add_special_tokens=False)["input_ids"]
    want = _shared_row_nll_gradient(model, ids, tok.bos_token_id)
    grads = {}
    for through in (True, False):
        embeds = table[torch.tensor([ids])].detach().clone().requires_grad_()
        prompt_nll(model, embeds, torch.tensor([ids]), tok.bos_token_id, through_token=through)[
            0
        ].backward()
        # Sum the per-position gradients of a repeated token: its shared row's gradient.
        same = torch.tensor([[float(a == b) for b in ids] for a in ids])
        grads[through] = same @ embeds.grad[0]
    torch.testing.assert_close(grads[True], want, rtol=1e-4, atol=1e-6)
    cosine = F.cosine_similarity(grads[False].flatten(), want.flatten(), dim=0)
    assert cosine < 0.99  # the context-only path (PEZ's) is not this gradient


def test_prompt_nll_through_token_needs_tied_embeddings(tiny_gpt2):
    model, tok = load_lm(str(tiny_gpt2), "causal", device="cpu"), load_tokenizer(str(tiny_gpt2))
    out = model.get_output_embeddings()
    out.weight = torch.nn.Parameter(out.weight.detach().clone())  # untie the output layer
    ids = torch.tensor([tok("the news", add_special_tokens=False)["input_ids"]])
    embeds = model.get_input_embeddings().weight[ids]
    with pytest.raises(ValueError, match="tied input and output embeddings"):
        prompt_nll(model, embeds, ids, tok.bos_token_id, through_token=True)


# ---------------------------------------------------------------------- the algorithm


@pytest.fixture(scope="module")
def sharp_gpt2(tmp_path_factory) -> Path:
    """A tiny GPT-2 with larger random weights (init std 0.3), so the prompt moves its predictions
    and its own next-token distribution is far from uniform."""
    return make_tiny_gpt2(tmp_path_factory.mktemp("sharp"), init_std=0.3)


def _config(model, fsc_dir, out, algorithm, steps=30, **train):
    return config_from_dict(
        {
            "task": {"dataset": "sst-2", "data_dir": str(fsc_dir), "split_seed": "16-100"},
            "target": {"model": str(model), "device": "cpu", "max_length": 64, "batch_size": 64},
            "policy": {"model": str(model)},
            "algorithm": algorithm,
            "train": {"steps": steps, "seed": 0, **train},
            "out_dir": str(out),
        }
    )


def _algorithm(config):
    task = build_task(config)
    ctx = RunContext(config, task, Path(config.out_dir))
    return config.algorithm.make(ctx), ctx


@torch.no_grad()
def _train_ce_and_nll(algo, ctx) -> tuple[float, float]:
    """Full-training-set CE and reference NLL of the current projection."""
    ids = algo.project()
    embeds = algo.table[ids][None]
    logits = algo.scorer.score(embeds, ctx.task.split("train").texts)[0]
    ce = F.cross_entropy(logits, torch.tensor(ctx.task.split("train").labels)).item()
    nll = prompt_nll(ctx.target.model, embeds, ids[None], algo.bos_id)[0].item()
    return ce, nll


def test_pez_lowers_training_loss_and_perplexity_term_lowers_perplexity(
    sharp_gpt2, fsc_dir, tmp_path
):
    outcome = {}
    for alpha in (0.0, 1.0):
        algorithm = {"name": "pez", "perplexity_weight": alpha, "lr_warmup_steps": 0}
        config = _config(sharp_gpt2, fsc_dir, tmp_path, algorithm)
        algo, ctx = _algorithm(config)
        start = _train_ce_and_nll(algo, ctx)
        logs = [algo.step(s) for s in range(30)]
        outcome[alpha] = (start, _train_ce_and_nll(algo, ctx), logs)
    (ce0, _), (ce_end, nll_plain), logs = outcome[0.0]
    assert ce_end < ce0 - 0.1  # 1.17 -> 0.82 with this seed
    assert all("losses/perplexity_nll" in v for v in logs)  # logged even when α = 0
    _, (_, nll_reg), logs_reg = outcome[1.0]
    assert nll_reg < nll_plain - 1.0  # 3.6 vs 6.2 with the same seed
    assert logs_reg[0]["losses/total"] == pytest.approx(
        logs_reg[0]["losses/task_ce"] + logs_reg[0]["losses/perplexity_nll"], rel=1e-5
    )


def test_lr_warmup_and_decay_follow_pez():
    # PEZ's script: Hugging Face's linear warm-up (0 at the first step) then linear decay to 0.
    got = [lr_factor(k, 4, 10, "linear") for k in range(11)]
    assert got == pytest.approx([0, 0.25, 0.5, 0.75, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0])
    assert [lr_factor(k, 4, 10, "constant") for k in (0, 2, 4, 9)] == [0, 0.5, 1, 1]
    assert lr_factor(3, 0, 10, "linear") == pytest.approx(0.7)
    pez = load_config(None, ["algorithm.name=pez"]).algorithm
    soft = load_config(None, ["algorithm.name=softprompt"]).algorithm
    assert (pez.lr_warmup_steps, pez.lr_schedule) == (500, "linear")
    assert (soft.lr_warmup_steps, soft.lr_schedule) == (500, "linear")


@pytest.mark.parametrize("name", ["pez", "softprompt"])
def test_first_step_keeps_the_initial_prompt_and_lr_ramps(tiny_gpt2, fsc_dir, tmp_path, name):
    config = _config(tiny_gpt2, fsc_dir, tmp_path, {"name": name, "lr_warmup_steps": 4}, steps=6)
    algo, _ = _algorithm(config)
    start = algo.prompt.detach().clone()
    logs = [algo.step(0)]
    assert torch.equal(algo.prompt.detach(), start)  # lr 0 at the first step: label words kept
    logs += [algo.step(s) for s in range(1, 6)]
    lrs = [0.3 * f for f in (0, 0.25, 0.5, 0.75, 1.0, 0.5)]  # warm-up 4, decay to 0 at step 6
    assert [v["charts/lr"] for v in logs] == pytest.approx(lrs)
    assert not torch.equal(algo.prompt.detach(), start)


def test_pez_projection_stays_in_whole_words(tiny_roberta, tiny_gpt2, fsc_dir, tmp_path):
    config = _config(
        tiny_roberta,
        fsc_dir,
        tmp_path,
        {"name": "pez", "allowed_tokens": "words", "init": "random", "restarts": 2},
        steps=6,
    )
    algo, ctx = _algorithm(config)
    tok = ctx.target.tokenizer
    allowed = set(algo.allowed.nonzero().squeeze(-1).tolist())
    assert allowed and all(
        (t := tok.convert_ids_to_tokens(i)).startswith("Ġ") and t[1:].isalpha() for i in allowed
    )
    for step in range(6):
        algo.step(step)
        assert set(algo.project().tolist()) <= allowed
    assert len(algo.eval_prompts()) == 2  # restart 0's last prompt waits for the dev eval


def test_pez_topk_mask_uses_the_reference_lm(tiny_roberta, tiny_gpt2, fsc_dir, tmp_path):
    config = _config(
        tiny_roberta,
        fsc_dir,
        tmp_path,
        {
            "name": "pez",
            "allowed_tokens": "topk",
            "allowed_topk": 7,
            "reference_model": str(tiny_gpt2),
        },
    )
    algo, _ = _algorithm(config)
    assert int(algo.allowed.sum()) == 7
    assert algo.reference.name == str(tiny_gpt2)


def test_perplexity_weight_with_masked_target_is_an_error(tiny_roberta, fsc_dir, tmp_path):
    config = _config(tiny_roberta, fsc_dir, tmp_path, {"name": "pez", "perplexity_weight": 0.5})
    with pytest.raises(ConfigError, match="perplexity_weight > 0 needs a causal target"):
        _algorithm(config)


def test_pez_config_defaults_and_bad_values():
    config = config_from_dict({"algorithm": {"name": "pez"}})
    algo = config.algorithm
    assert (algo.prompt_length, algo.lr, algo.batch_size, algo.grad_clip) == (10, 0.3, 16, 1.0)
    assert (algo.projection, algo.perplexity_weight, algo.restarts) == ("cosine", 0.0, 1)
    with pytest.raises(ConfigError, match="algorithm.projection"):
        config_from_dict({"algorithm": {"name": "pez", "projection": "dot"}})
    with pytest.raises(ConfigError, match="did you mean algorithm.perplexity_weight"):
        config_from_dict({"algorithm": {"name": "pez", "perplexity_weigth": 1}})


def test_shipped_pez_config_loads():
    config = load_config(REPO / "configs" / "sst2_pez.yaml")
    assert config.algorithm.name == "pez"
    assert config.train.steps == 5000


def _metrics(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("charts/step_seconds")
    return rows


@pytest.mark.slow
def test_pez_resume_equals_uninterrupted(tiny_gpt2, fsc_dir, tmp_path, monkeypatch):
    algorithm = {"name": "pez", "perplexity_weight": 0.5, "restarts": 2, "init": "random"}
    kw = {"eval_every": 3, "checkpoint_every": 4}
    whole = run(
        _config(tiny_gpt2, fsc_dir, tmp_path / "a", algorithm, 12, **kw), show_progress=False
    )

    from hardprompts.algorithms.pez import PEZ

    step = PEZ.step

    def crash_at_9(self, i):
        if i == 9:
            raise KeyboardInterrupt
        return step(self, i)

    cut = _config(tiny_gpt2, fsc_dir, tmp_path / "b", algorithm, 12, **kw)
    monkeypatch.setattr(PEZ, "step", crash_at_9)
    with pytest.raises(KeyboardInterrupt):
        run(cut, show_progress=False)
    monkeypatch.setattr(PEZ, "step", step)
    resumed = run(cut, resume=True, show_progress=False)  # from the step-8 checkpoint
    for key in ("best_prompt", "dev_accuracy", "best_step", "test_accuracy", "prompt_perplexity"):
        assert resumed[key] == whole[key]
    assert _metrics(tmp_path / "b") == _metrics(tmp_path / "a")


def test_embedding_scorer_counts_its_pairs(tiny_gpt2):
    """PEZ's scoring through prompt embeddings is target work too (result.json target_usage)."""
    from hardprompts.modeling import load_lm, load_tokenizer
    from hardprompts.targets.embeds import EmbeddingScorer
    from hardprompts.targets.hf import HFTarget

    target = HFTarget(
        load_lm(str(tiny_gpt2), "causal"), load_tokenizer(str(tiny_gpt2)), "causal",
        "{x} {prompt}", [" terrible", " great"], batch_size=4,
    )  # fmt: skip
    scorer = EmbeddingScorer(target)
    embeds = scorer.embedding_table[torch.tensor([[5, 6, 7], [8, 9, 10]])]  # [P=2, T=3, d]
    scorer.score(embeds, ["a film", "bad", "good acting"])
    assert target.usage.pairs == 6
    assert target.usage.requests == 2  # 6 rows in forwards of at most 4
    assert target.usage.prompt_tokens > 6 * 3
