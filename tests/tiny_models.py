"""Tiny random models and a byte-level BPE tokenizer, built in-process (no downloads).

Shared by the tests: ``make_tiny_tokenizer``, ``make_tiny_gpt2`` (a causal LM) and
``make_tiny_roberta`` (a masked LM with ``<mask>``). The builders save with ``save_pretrained``
into a directory and return its path, so code under test loads them as it would a Hub model
(``AutoModelForCausalLM.from_pretrained(path)``). Weights are seeded, so every call builds the
same model; the global RNG is left untouched.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForMaskedLM,
)

# Enough text to learn a few dozen merges, including the verbalizers " great" and " terrible".
SENTENCES = [
    "This movie was great and the acting was great.",
    "This movie was terrible and the plot was terrible.",
    "A great film with a great cast, it was good.",
    "A terrible film, it was bad and boring.",
    "The language feels consistently good and the delivery is great.",
    "It is okay, not good, not bad, just okay.",
    "World news, sports news, business news and tech news.",
    "The review says the food was great but the service was terrible.",
]

# Same order as RoBERTa's first ids: <s>=0, <pad>=1, </s>=2, <unk>=3; then GPT-2's special token.
_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<|endoftext|>"]
_VOCAB_SIZE = 300  # 256 byte symbols + 5 special tokens + ~39 merges


def _train_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES, trainer)
    return tok


def make_tiny_tokenizer(tmp_dir: str | Path | None = None, kind: str = "gpt2"):
    """A byte-level BPE tokenizer (vocab ≈ 300) wrapped in ``PreTrainedTokenizerFast``.

    Args:
        tmp_dir: if given, ``save_pretrained`` into it.
        kind: ``"gpt2"``: BOS = EOS = UNK = ``<|endoftext|>``, no pad token, no special tokens
            added when encoding (like GPT-2). ``"roberta"``: ``<s>``, ``</s>``, ``<pad>``,
            ``<unk>`` and a ``<mask>`` that absorbs the space before it (``lstrip``, like
            RoBERTa's), with ``<s> … </s>`` added around encoded text.
    """
    tok = _train_bpe()
    if kind == "gpt2":
        hf = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<|endoftext|>",
            eos_token="<|endoftext|>",
            unk_token="<|endoftext|>",
        )
    elif kind == "roberta":
        tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
        tok.post_processor = processors.RobertaProcessing(
            ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>"))
        )
        hf = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<s>",
            eos_token="</s>",
            sep_token="</s>",
            cls_token="<s>",
            unk_token="<unk>",
            pad_token="<pad>",
            mask_token="<mask>",
        )
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; valid kinds: 'gpt2', 'roberta'")
    if tmp_dir is not None:
        hf.save_pretrained(str(tmp_dir))
    return hf


def make_tiny_gpt2(tmp_dir: str | Path, seed: int = 0, init_std: float = 0.02) -> Path:
    """Save a random 2-layer GPT-2 (d = 32) and its tokenizer under ``tmp_dir/tiny-gpt2``.

    ``init_std`` is the weights' initialisation scale (GPT-2's 0.02 by default; larger values give
    a model whose predictions depend strongly on its input)."""
    path = Path(tmp_dir) / "tiny-gpt2"
    tok = make_tiny_tokenizer(path, kind="gpt2")
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=64,
        vocab_size=len(tok),
        initializer_range=init_std,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(str(path))
    return path


def make_tiny_roberta(tmp_dir: str | Path, seed: int = 0) -> Path:
    """Save a random 2-layer RoBERTa masked LM (d = 32) and its tokenizer under
    ``tmp_dir/tiny-roberta``."""
    path = Path(tmp_dir) / "tiny-roberta"
    tok = make_tiny_tokenizer(path, kind="roberta")
    config = RobertaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,  # RoBERTa positions start at pad_token_id + 1
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RobertaForMaskedLM(config)
    model.save_pretrained(str(path))
    return path


def make_tiny_causal(family: str, seed: int = 0, sliding_window: int = 6):
    """A random 2-layer causal LM of ``family`` in memory, with the tiny tokenizer: ``gpt2``
    (learned positions), ``llama`` (rotary positions, 4 query heads sharing 2 key/value heads) or
    ``mistral`` (the same with a sliding window of ``sliding_window`` tokens). Weights are large
    enough (std 0.3) that the outputs depend on every position. Returns (model, tokenizer)."""
    tok = make_tiny_tokenizer(None, "gpt2")
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family == "gpt2":
            cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tok),
                             initializer_range=0.3, **ids)  # fmt: skip
            model = GPT2LMHeadModel(cfg)
        else:
            common = dict(
                vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                initializer_range=0.3, **ids,
            )  # fmt: skip
            if family == "llama":
                model = LlamaForCausalLM(LlamaConfig(**common))
            elif family == "mistral":
                model = MistralForCausalLM(MistralConfig(sliding_window=sliding_window, **common))
            else:
                raise ValueError(f"unknown family {family!r}; valid: gpt2, llama, mistral")
    return model.eval(), tok


#: Agent settings (APPO, search) that fit the tiny GPT-2's 64 positions.
TINY_AGENT = {
    "meta_prompt": "Pairs:\n{demos}\n",
    "answer_prefix": "Instruction:",
    "num_demos": 1,
    "demo_max_tokens": 8,
    "max_prompt_tokens": 8,
}


def make_tiny_reviews(root: str | Path, seeds=("16-100", "16-13"), per_split: int = 12) -> Path:
    """A small dataset folder from the review set shipped with hardprompts: for each split seed
    ``<seed>/{train,dev}.tsv`` (``per_split`` rows, a different subset per seed) and 48 test rows
    in ``test.tsv``; labels 0/1 (verbalizers " terrible" / " great")."""
    import hardprompts

    shipped = Path(hardprompts.__file__).parent / "demo_data"
    root = Path(root)
    test = shipped.joinpath("test.tsv").read_text().splitlines()
    root.mkdir(parents=True, exist_ok=True)
    root.joinpath("test.tsv").write_text("\n".join(test[:49]) + "\n")
    for k, seed in enumerate(seeds):
        (root / seed).mkdir(exist_ok=True)
        for name in ("train", "dev"):
            header, *body = shipped.joinpath(f"{name}.tsv").read_text().splitlines()
            picked = body[k :: len(seeds)][:per_split]
            (root / seed / f"{name}.tsv").write_text("\n".join([header, *picked]) + "\n")
    return root
