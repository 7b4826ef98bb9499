"""(prompt, example) pairs scored per second: hardprompts' target scorer vs a naive reference loop.

The reference loop is what research code typically does: one forward per prompt over all examples
(padded), full-vocabulary logits at every position, no key/value cache, then the verbalizer logits
picked at the scored position. Both run on the same randomly initialised model, the same SST-2
sentences, in the same process, and must agree to 1e-4 before any timing is printed.

    python benchmarks/score_throughput.py                 # distilgpt2- and distilroberta-shaped models
    python benchmarks/score_throughput.py --layers 2 --width 64 --examples 16 --prompts 4   # quick
    python benchmarks/score_throughput.py --kinds choices  # multiple choice (BIG-bench task)

The ``choices`` case scores every option of a BIG-bench multiple-choice task (``--choice-task``,
default ruin_names: 4 options) by its log-likelihood after the templated input, with one prompt:
hardprompts computes each input's cache once and batches the options of all inputs; the reference
runs one full forward per (input, option), as research code typically does. Both must agree to
1e-4 before any timing is printed.

Models are shaped like distilgpt2 (causal, 6 layers, 768 wide, vocabulary 50,257) and
distilroberta-base (masked, 6 layers, 768 wide, vocabulary 50,265), with random weights (no
downloads here). The tokenizer is a byte-level BPE trained on the sentences themselves. The data
is found as the library finds it: ``$HARDPROMPTS_DATA_DIR``, else the cache that ``hardprompts data
fetch sst-2`` (and ``bbii/<task>`` for ``choices``) fills; ``--data-dir`` points elsewhere.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForMaskedLM,
)

from hardprompts import datastore
from hardprompts.config import TaskConfig
from hardprompts.targets.choices import ChoiceScorer, naive_continuation_logprobs
from hardprompts.targets.hf import HFTarget
from hardprompts.taskdata import load_bbii
from hardprompts.tasks import load_split

SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<|endoftext|>"]


def make_tokenizer(texts: list[str], kind: str) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts + [" terrible", " great"] * 50, trainer)
    if kind == "causal":
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
        )
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )


def make_model(kind: str, layers: int, width: int, vocab: int):
    torch.manual_seed(0)
    if kind == "causal":
        cfg = GPT2Config(
            n_layer=layers,
            n_embd=width,
            n_head=max(1, width // 64),
            vocab_size=vocab,
            n_positions=1024,
        )
        return GPT2LMHeadModel(cfg).eval()
    cfg = RobertaConfig(
        num_hidden_layers=layers, hidden_size=width, num_attention_heads=max(1, width // 64),
        intermediate_size=4 * width, vocab_size=vocab, max_position_embeddings=514, pad_token_id=1,
    )  # fmt: skip
    return RobertaForMaskedLM(cfg).eval()


@torch.no_grad()
def naive_scores(target: HFTarget, prompts: list[str], texts: list[str]) -> torch.Tensor:
    """The reference loop: per prompt, one padded forward over all examples with full logits."""
    out = torch.empty(len(prompts), len(texts), len(target.verbalizer_ids))
    for p, prompt in enumerate(prompts):
        encs = [target.encode(x, prompt) for x in texts]
        width = max(len(e.ids) for e in encs)
        ids = torch.full((len(encs), width), target.pad_id)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = torch.tensor(e.ids)
            mask[i, : len(e.ids)] = 1
        logits = target.model(
            input_ids=ids, attention_mask=mask
        ).logits  # [N, L, V]: every position, every word
        pos = torch.tensor([e.position for e in encs])
        out[p] = logits[torch.arange(len(encs)), pos][:, target.verbalizer_ids]
    return out


def default_data_dir() -> Path:
    """``fsc/`` of the data tree, as the library finds it: ``$HARDPROMPTS_DATA_DIR``, else the
    cache that ``hardprompts data fetch`` fills. Nothing is downloaded; absent, the error names the
    fixes."""
    return datastore.require_local("sst-2", "--data-dir")


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default=None,
        help="the few-shot splits, fsc/ (default: fsc/ of $HARDPROMPTS_DATA_DIR, else of the "
        "`hardprompts data fetch` cache; bbii/ is read beside it)",
    )
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument(
        "--prompts", type=int, default=16, help="prompts P (RL papers: 16 per step)"
    )
    parser.add_argument("--examples", type=int, default=64, help="SST-2 test sentences N")
    parser.add_argument("--prompt-tokens", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--kinds", default="causal,masked", help="causal, masked, choices")
    parser.add_argument(
        "--choice-task", default="ruin_names", help="BIG-bench multiple-choice task"
    )
    parser.add_argument(
        "--tokens-per-batch",
        type=int,
        default=-1,
        help="cap per forward: -1 auto (2048 on CPU), 0 none",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.data_dir = args.data_dir or str(default_data_dir())

    test = load_split(TaskConfig(data_dir=args.data_dir), "test", 2)
    texts = test.texts[: args.examples]
    rng = random.Random(0)
    words = sorted({w for t in test.texts[:500] for w in t.split() if w.isalpha()})
    prompts = [" ".join(rng.sample(words, args.prompt_tokens)) for _ in range(args.prompts)]
    print(f"{args.prompts} prompts x {len(texts)} SST-2 examples, model {args.layers} layers x {args.width}, "
          f"{args.threads} threads, median of {args.repeats}")  # fmt: skip
    for kind in args.kinds.split(","):
        if kind == "choices":
            choices_case(args, test.texts[:2000])
            continue
        tok = make_tokenizer(test.texts[:2000], kind)
        vocab = 50257 if kind == "causal" else 50265
        model = make_model(kind, args.layers, args.width, vocab)
        template = "{x} {prompt}" if kind == "causal" else "{x} {prompt} {mask} ."
        cap = {-1: "auto", 0: None}.get(args.tokens_per_batch, args.tokens_per_batch)
        target = HFTarget(model, tok, kind, template, [" terrible", " great"], tokens_per_batch=cap)
        fast_t, fast = timed(lambda t=target: t.score(prompts, texts), args.repeats)
        naive_t, naive = timed(lambda t=target: naive_scores(t, prompts, texts), args.repeats)
        torch.testing.assert_close(fast, naive, atol=1e-4, rtol=1e-4)
        pairs = len(prompts) * len(texts)
        print(
            f"{kind:6s} target ({'prompt after input, cached' if kind == 'causal' else 'mask position'}): "
            f"hardprompts {pairs / fast_t:8.1f} pairs/s   naive {pairs / naive_t:8.1f} pairs/s   "
            f"ratio {naive_t / fast_t:.2f}x"
        )


def choices_case(args, corpus: list[str]) -> None:
    """Multiple choice: every option's log-likelihood, shared prefix cache vs one forward each."""
    root = Path(args.data_dir).parent / "bbii"
    examples = load_bbii(args.choice_task, "test", root=root).examples[: args.examples]
    texts = [f"Pick the right option.\nInput: {e.fields['x']}\nAnswer:" for e in examples]
    options = [[" " + c for c in e.choices] for e in examples]
    tok = make_tokenizer(corpus + [c for e in examples for c in e.choices], "causal")
    model = make_model("causal", args.layers, args.width, 50257)
    cap = {-1: 2048, 0: None}.get(args.tokens_per_batch, args.tokens_per_batch)
    scorer = ChoiceScorer(model, tok, max_length=1024, tokens_per_batch=cap)
    fast_t, fast = timed(lambda: scorer.logprobs(texts, options), args.repeats)
    naive_t, naive = timed(
        lambda: naive_continuation_logprobs(model, scorer, texts, options), args.repeats
    )
    torch.testing.assert_close(
        torch.tensor([v for r in fast for v in r]),
        torch.tensor([v for r in naive for v in r]),
        atol=1e-4,
        rtol=1e-4,
    )
    n = sum(len(o) for o in options)
    print(
        f"choices ({args.choice_task}, {len(texts)} inputs, {n} options, shared prefix cache): "
        f"hardprompts {n / fast_t:8.1f} options/s   naive {n / naive_t:8.1f} options/s   "
        f"ratio {naive_t / fast_t:.2f}x"
    )


if __name__ == "__main__":
    main()
