"""Train the built-in small GPT-2-architecture language model on Yelp review sentences.

Reproducible from scratch on one CPU thread: fixed seed, every setting is a command-line
argument whose default is the shipped run. Steps:

1. Read the Yelp *dev* sentences (``clean/sentiment.dev.{0,1}.clean``); the test files are
   held out for ``scripts/eval_small_lm.py`` and never read here. A seeded random slice of each
   dev file (``--val-fraction``) is kept aside to monitor validation loss.
2. Train a byte-level BPE tokenizer on the training sentences (``<|endoftext|>`` doubles as
   bos/eos/unk/pad) and check that the sentiment words used as verbalizers are single tokens.
3. Pack ``<|endoftext|>``-separated sentences into fixed-length blocks and train
   ``GPT2LMHeadModel`` with AdamW and a warmup + cosine learning-rate schedule. Each block
   holds sentences of one file only (all negative or all positive, like the sentences of one
   review), so the model learns that sentiment persists across a text; with blocks mixing both
   files it learns that neighbouring sentences are unrelated and the zero-shot sentiment prompt
   ``"{sentence} It was"`` fails. Sentence and block order are re-shuffled every epoch.
4. Save weights (fp16 safetensors), tokenizer, ``training_record.json`` and a ``README.md``
   model card, after evaluating the saved files with ``scripts/eval_small_lm.py``. Everything is
   written to a temporary directory first and renamed into place, so a crash leaves the output
   directory untouched.

Usage (from the repository root)::

    python scripts/train_small_lm.py

The data is read where the library reads it: ``$HARDPROMPTS_DATA_DIR`` (a folder holding
``fsc/`` and ``tst/``), else the cache that ``hardprompts data fetch yelp-sentiment sst-2`` fills;
``--data-dir`` and ``--sst2-test`` point elsewhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import tokenizers
import torch
import transformers
from eval_small_lm import default_sst2_test, default_yelp_dir, evaluate  # sibling in scripts/
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

REPO_ROOT = Path(__file__).resolve().parents[1]
EOS = "<|endoftext|>"
TRAIN_FILES = ("clean/sentiment.dev.0.clean", "clean/sentiment.dev.1.clean")
SINGLE_TOKEN_WORDS = (" terrible", " bad", " okay", " good", " great")
MAX_WEIGHTS_BYTES = 25 * 1024 * 1024


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line settings; the defaults reproduce the shipped model."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="Yelp data root holding clean/sentiment.dev.{0,1}.clean (default: tst/yelp of "
        "$HARDPROMPTS_DATA_DIR, else of the `hardprompts data fetch` cache)",
    )
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "src/hardprompts/builtin/yelp-small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.01)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-positions", type=int, default=256)
    p.add_argument(
        "--dropout", type=float, default=0.1, help="embedding, attention and residual dropout"
    )
    p.add_argument("--block-size", type=int, default=128, help="tokens per packed training block")
    p.add_argument("--batch-size", type=int, default=32, help="blocks per optimizer step")
    p.add_argument("--steps", type=int, default=1400)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument(
        "--min-lr-ratio", type=float, default=0.1, help="final learning rate as a fraction of --lr"
    )
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--adam-beta2", type=float, default=0.98)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--sst2-test",
        type=Path,
        default=None,
        help="SST-2 test TSV for the zero-shot check in the model card (default: fsc/sst-2/"
        "test.tsv of $HARDPROMPTS_DATA_DIR, else of the `hardprompts data fetch` cache)",
    )
    args = p.parse_args(argv)
    if args.data_dir is None:
        args.data_dir = default_yelp_dir("--data-dir")
    if args.sst2_test is None:
        args.sst2_test = default_sst2_test()
    return args


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository root (stable across checkouts)."""
    return os.path.relpath(path.resolve(), REPO_ROOT)


def cpu_name() -> str:
    """Human-readable CPU model, for the record."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_file(path: Path) -> dict[str, str | int]:
    """Repository-relative path, line count and sha256 of a data file."""
    data = path.read_bytes()
    return {
        "path": repo_relative(path),
        "lines": data.count(b"\n"),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def load_corpora(data_dir: Path) -> tuple[list[list[str]], list[dict[str, str | int]]]:
    """Non-empty sentences of each dev file (one list per file) and a description of the files."""
    corpora = []
    files = []
    for name in TRAIN_FILES:
        path = data_dir / name
        files.append(describe_file(path))
        with path.open(encoding="utf-8") as f:
            corpora.append([line.strip() for line in f if line.strip()])
    return corpora, files


def split_train_val(
    sentences: Sequence[str], val_fraction: float, rng: random.Random
) -> tuple[list[str], list[str]]:
    """Random split into training and validation sentences."""
    order = list(range(len(sentences)))
    rng.shuffle(order)
    n_val = max(1, round(len(sentences) * val_fraction))
    val = [sentences[i] for i in sorted(order[:n_val])]
    train = [sentences[i] for i in sorted(order[n_val:])]
    return train, val


def train_tokenizer(
    sentences: Sequence[str], vocab_size: int, model_max_length: int
) -> GPT2TokenizerFast:
    """Byte-level BPE (GPT-2 style, no prefix space) trained on ``sentences``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sentences, trainer)
    return GPT2TokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        add_prefix_space=False,
        model_max_length=model_max_length,
    )


def check_single_tokens(tokenizer: GPT2TokenizerFast, words: Sequence[str]) -> None:
    """Fail with a clear message unless every word encodes to exactly one token."""
    bad = {w: tokenizer.tokenize(w) for w in words if len(tokenizer.encode(w)) != 1}
    if bad:
        raise SystemExit(
            "tokenizer check failed: these verbalizer words must be single tokens but are "
            + ", ".join(f"{w!r} -> {pieces}" for w, pieces in bad.items())
            + ". Increase --vocab-size or change the training data."
        )


def encode_sentences(tokenizer: GPT2TokenizerFast, sentences: Sequence[str]) -> list[list[int]]:
    """Token ids of each sentence, prefixed with the end-of-text separator."""
    eos = tokenizer.eos_token_id
    return [[eos] + ids for ids in tokenizer(list(sentences))["input_ids"]]


def pack(encoded: Sequence[list[int]], block_size: int) -> torch.Tensor:
    """Concatenate sequences and cut them into ``[n_blocks, block_size]`` (remainder dropped)."""
    stream = torch.tensor([t for ids in encoded for t in ids], dtype=torch.long)
    n_blocks = len(stream) // block_size
    return stream[: n_blocks * block_size].view(n_blocks, block_size)


def pack_each(
    corpora: Sequence[Sequence[list[int]]], block_size: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Blocks of every corpus, each block from one corpus only; shuffled if given a generator."""
    parts = []
    for encoded in corpora:
        order = (
            torch.randperm(len(encoded), generator=generator).tolist()
            if generator is not None
            else range(len(encoded))
        )
        parts.append(pack([encoded[i] for i in order], block_size))
    blocks = torch.cat(parts)
    if generator is not None:
        blocks = blocks[torch.randperm(len(blocks), generator=generator)]
    return blocks


def training_batches(
    corpora: Sequence[Sequence[list[int]]],
    block_size: int,
    batch_size: int,
    generator: torch.Generator,
) -> Iterator[torch.Tensor]:
    """Endless ``[batch_size, block_size]`` batches, re-packed and re-shuffled every epoch."""
    while True:
        blocks = pack_each(corpora, block_size, generator)
        for start in range(0, len(blocks) - batch_size + 1, batch_size):
            yield blocks[start : start + batch_size]


def build_model(args: argparse.Namespace, tokenizer: GPT2TokenizerFast) -> GPT2LMHeadModel:
    """Freshly initialised GPT-2 with tied input/output embeddings."""
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=args.n_positions,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        resid_pdrop=args.dropout,
        embd_pdrop=args.dropout,
        attn_pdrop=args.dropout,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(config)


def make_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases and LayerNorm gains)."""
    params = list(model.parameters())  # tied embeddings appear once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, args.adam_beta2))


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def lm_loss(model: GPT2LMHeadModel, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a batch of packed (unpadded) blocks."""
    logits = model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1)
    )


@torch.no_grad()
def mean_loss(model: GPT2LMHeadModel, blocks: torch.Tensor, batch_size: int) -> float:
    """Token-weighted mean next-token loss over ``blocks`` in eval mode."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start : start + batch_size]
        n_targets = batch.numel() - len(batch)
        total += lm_loss(model, batch).item() * n_targets
        count += n_targets
    model.train(was_training)
    return total / count


def train(
    model: GPT2LMHeadModel,
    train_corpora: Sequence[Sequence[list[int]]],
    val_blocks: torch.Tensor,
    train_probe_blocks: torch.Tensor,
    args: argparse.Namespace,
) -> list[dict[str, float | int]]:
    """Run the optimisation; returns the history of periodic train/validation losses."""
    generator = torch.Generator().manual_seed(args.seed)
    batches = training_batches(train_corpora, args.block_size, args.batch_size, generator)
    optimizer = make_optimizer(model, args)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, args.warmup_steps, args.steps, args.min_lr_ratio)
    )
    history: list[dict[str, float | int]] = []
    model.train()
    start = last_log = time.perf_counter()
    window: list[float] = []
    for step in range(1, args.steps + 1):
        loss = lm_loss(model, next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        scheduler.step()
        window.append(loss.item())

        if step % args.log_every == 0 or step == args.steps:
            now = time.perf_counter()
            per_step = (now - last_log) / len(window)
            eta = per_step * (args.steps - step)
            print(
                f"step {step:5d}/{args.steps}  loss {sum(window) / len(window):.4f}  "
                f"lr {scheduler.get_last_lr()[0]:.2e}  {per_step:.2f}s/step  "
                f"elapsed {(now - start) / 60:.1f}m  eta {eta / 60:.1f}m",
                flush=True,
            )
            window, last_log = [], now
        if step % args.eval_every == 0 or step == args.steps:
            eval_start = time.perf_counter()
            record = {
                "step": step,
                "train_loss": mean_loss(model, train_probe_blocks, args.batch_size),
                "val_loss": mean_loss(model, val_blocks, args.batch_size),
                "elapsed_s": round(time.perf_counter() - start, 1),
            }
            history.append(record)
            print(
                f"eval  step {step:5d}  train {record['train_loss']:.4f}  "
                f"val {record['val_loss']:.4f}  (val ppl {math.exp(record['val_loss']):.2f})",
                flush=True,
            )
            last_log += time.perf_counter() - eval_start  # keep s/step about training only
    return history


def save_model(model: GPT2LMHeadModel, directory: Path) -> None:
    """Save fp16 weights with a config whose ``dtype`` is float32.

    fp16 halves the package size; declaring float32 in ``config.json`` makes a plain
    ``from_pretrained`` (dtype "auto") upcast the weights, which is what CPU inference needs.
    """
    model.to(torch.float16).save_pretrained(directory)
    config = GPT2Config.from_pretrained(directory)
    config.dtype = torch.float32
    config.save_pretrained(directory)


def write_atomically(out_dir: Path, fill: Callable[[Path], None]) -> None:
    """Let ``fill`` write into a fresh sibling directory, then swap it in as ``out_dir``."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)
        fill(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def training_command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run, with non-default arguments spelled out."""
    defaults = vars(parse_args([]))
    extra = [f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if defaults[k] != v]
    return " ".join(["python scripts/train_small_lm.py", *extra])


def model_card(record: dict) -> str:
    """Markdown model card summarising ``training_record.json``."""
    a, r, ev = record["arguments"], record["results"], record["evaluation"]
    sst2 = ev["sst2_zero_shot"]
    files = "\n".join(
        f"| `{f['path']}` | {f['lines']:,} | `{f['sha256'][:16]}…` |" for f in record["data_files"]
    )
    per_file = "\n".join(
        f"| `{name}` | {v['sentences']} | {v['tokens']:,} | {v['perplexity']:.2f} |"
        for name, v in ev["yelp_test_per_file"].items()
    )
    return f"""# yelp-small

A small GPT-2-architecture causal language model trained from scratch by this repository
(`scripts/train_small_lm.py`) on lower-cased Yelp review sentences. It is the default offline
policy / target / fluency model of `hardprompts`: it loads without network access and runs
comfortably on a CPU.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("src/hardprompts/builtin/yelp-small")
model = AutoModelForCausalLM.from_pretrained("src/hardprompts/builtin/yelp-small")
```

The weights are stored in fp16 to keep the package small ({record["weights_bytes"] / 2**20:.1f} MiB);
`config.json` declares `float32`, so `from_pretrained` upcasts them for CPU inference.

## Architecture

`GPT2LMHeadModel`: {a["n_layer"]} layers, hidden size {a["n_embd"]}, {a["n_head"]} heads,
{a["n_positions"]} positions, vocabulary {record["vocab_size"]:,}, tied input/output
embeddings, {record["parameters"]:,} parameters.

Tokenizer: byte-level BPE (GPT-2 style, no prefix space) trained with `tokenizers` on the same
training sentences; `<|endoftext|>` (id {record["eos_token_id"]}) is bos, eos, unk and pad. The
sentiment words {", ".join(f'`"{w}"`' for w in SINGLE_TOKEN_WORDS)} are single tokens
(checked by the training script).

## Data

Only the Yelp sentiment *dev* split (negative file `.0`, positive file `.1`), one lower-cased
review sentence per line:

| file | lines | sha256 |
|---|---:|---|
{files}

{record["split"]["train_sentences"]:,} sentences are used for training and a seeded random
{a["val_fraction"]:.0%} ({record["split"]["val_sentences"]:,} sentences) is held out as
validation (the same fraction of each file). The Yelp *test* files are never read during training and are used only for the
perplexity below.

## Training

Sentences are prefixed with `<|endoftext|>`, concatenated and cut into blocks of
{a["block_size"]} tokens ({record["split"]["train_tokens"]:,} training tokens). Each block is
packed from one file only, i.e. all its sentences share a sentiment like the sentences of one
review; the model therefore learns that sentiment persists through a text, which the zero-shot
sentiment prompt below relies on. Sentence and block order are re-shuffled every epoch. AdamW (β = 0.9, {a["adam_beta2"]},
weight decay {a["weight_decay"]} on matrices), peak learning rate {a["lr"]} with
{a["warmup_steps"]} warmup steps and cosine decay to {a["min_lr_ratio"]}×, batch
{a["batch_size"]} blocks, gradient clipping {a["grad_clip"]}, dropout {a["dropout"]},
{a["steps"]:,} steps (≈{r["epochs"]:.1f} epochs), seed {a["seed"]}, {a["threads"]} CPU
thread(s): {r["wall_time_s"] / 60:.1f} minutes on {record["environment"]["machine"]}.

```bash
{record["command"]}
python scripts/eval_small_lm.py --out runs/yelp-small-eval.json
```

## Results

| measurement | value |
|---|---:|
| final train loss (eval mode, {record["split"]["train_probe_blocks"]} training blocks) | {r["final_train_loss"]:.4f} |
| final validation loss (held-out dev sentences, packed) | {r["final_val_loss"]:.4f} (ppl {math.exp(r["final_val_loss"]):.2f}) |
| Yelp test perplexity (per sentence, token-weighted) | {ev["yelp_test_perplexity"]:.2f} |
| SST-2 test zero-shot accuracy (n = {sst2["n"]}) | {sst2["accuracy"]:.1%} |

Yelp test perplexity scores each test sentence independently after an `<|endoftext|>` prefix
(the end-of-text after the sentence is not scored), measured on the saved fp16 weights loaded
in fp32:

| file | sentences | tokens | perplexity |
|---|---:|---:|---:|
{per_file}

SST-2 zero-shot: the model reads `<|endoftext|>{sst2["template"]}` and predicts the label
whose verbalizer has the larger next-token logit (`" terrible"` → 0, `" great"` → 1); it
predicts "positive" for {sst2["predicted_positive_fraction"]:.1%} of the sentences (chance
accuracy is about 50%).

## Limitations

* Trained on about {record["split"]["train_tokens"] // 1000:,}k tokens of lower-cased,
  tokenised Yelp review sentences only. It has never seen capital letters, long documents or
  any other domain: upper-case text is split into rarely trained byte tokens and is scored
  poorly; outside restaurant/shop reviews its predictions are weak.
* Context is short ({a["n_positions"]} positions; training blocks of {a["block_size"]}
  tokens) and the model is tiny: useful as a fast, offline stand-in target, policy and fluency
  judge for tests and demos, not as a general-purpose language model.
* Sentiment knowledge comes from review text alone; zero-shot accuracy on movie reviews
  (SST-2) is far below that of large pretrained models.
* It reproduces the biases of Yelp reviews and must not be used to make decisions about people.
"""


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    corpora, data_files = load_corpora(args.data_dir)
    split_rng = random.Random(args.seed)
    train_sets, val_sets = zip(
        *(split_train_val(c, args.val_fraction, split_rng) for c in corpora), strict=True
    )
    train_sentences = [s for sentences in train_sets for s in sentences]
    n_val = sum(len(v) for v in val_sets)
    print(f"{len(train_sentences):,} training / {n_val:,} validation sentences")

    tokenizer = train_tokenizer(train_sentences, args.vocab_size, args.n_positions)
    check_single_tokens(tokenizer, SINGLE_TOKEN_WORDS)
    train_corpora = [encode_sentences(tokenizer, t) for t in train_sets]
    val_blocks = pack_each(
        [encode_sentences(tokenizer, v) for v in val_sets], args.block_size, None
    )
    train_tokens = sum(len(ids) for encoded in train_corpora for ids in encoded)
    probe_generator = torch.Generator().manual_seed(args.seed)
    train_probe_blocks = pack_each(train_corpora, args.block_size, probe_generator)[
        : len(val_blocks)
    ]
    print(f"{train_tokens:,} training tokens, {len(val_blocks)} validation blocks")

    model = build_model(args, tokenizer)
    n_params = model.num_parameters()
    print(f"GPT-2 {args.n_layer}x{args.n_embd}, {n_params:,} parameters")

    start = time.perf_counter()
    history = train(model, train_corpora, val_blocks, train_probe_blocks, args)
    wall_time = time.perf_counter() - start
    print(f"training took {wall_time / 60:.1f} minutes")

    record = {
        "arguments": {
            k: repo_relative(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        },
        "command": training_command(args),
        "data_files": data_files,
        "split": {
            "train_sentences": len(train_sentences),
            "val_sentences": n_val,
            "train_tokens": train_tokens,
            "val_blocks": len(val_blocks),
            "train_probe_blocks": len(train_probe_blocks),
        },
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "parameters": n_params,
        "results": {
            "steps": args.steps,
            "epochs": args.steps * args.batch_size * args.block_size / train_tokens,
            "wall_time_s": round(wall_time, 1),
            "final_train_loss": history[-1]["train_loss"],
            "final_val_loss": history[-1]["val_loss"],
            "history": history,
        },
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "machine": cpu_name(),
        },
    }

    def fill(directory: Path) -> None:
        save_model(model, directory)
        tokenizer.save_pretrained(directory)
        record["weights_bytes"] = (directory / "model.safetensors").stat().st_size
        if record["weights_bytes"] > MAX_WEIGHTS_BYTES:
            raise SystemExit(
                f"model.safetensors is {record['weights_bytes']:,} bytes, "
                f"over the {MAX_WEIGHTS_BYTES:,}-byte limit"
            )
        print("evaluating the saved files ...")
        record["evaluation"] = evaluate(directory, args.data_dir, args.sst2_test)
        print(
            f"Yelp test perplexity {record['evaluation']['yelp_test_perplexity']:.2f}, "
            f"SST-2 zero-shot accuracy {record['evaluation']['sst2_zero_shot']['accuracy']:.4f}"
        )
        (directory / "training_record.json").write_text(
            json.dumps(record, indent=2) + "\n", encoding="utf-8"
        )
        (directory / "README.md").write_text(model_card(record), encoding="utf-8")
        for path in directory.iterdir():
            path.chmod(0o644)

    write_atomically(args.out_dir, fill)
    print(f"saved to {args.out_dir}")


if __name__ == "__main__":
    main()
