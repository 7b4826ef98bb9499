"""Memory and time of multiple choice and sampled generation: the text's key/value cache read in
place by every option / sample (shared) against a copy of it per option / sample (copy).

Two cases, each on a GPT-2-shaped random model (6 layers x 768, 12 heads, vocabulary 50,257) and a
Llama-shaped one (6 layers x 768, 12 query heads sharing 4 key/value heads, rotary positions,
vocabulary 32,000):

(a) multiple choice: 64 inputs of ``--input-tokens`` tokens (0.75-1.25 of it, varied), 12 options
    of 1-3 tokens each, every option's log-likelihood (``ChoiceScorer.logprobs_ids``; BIG-bench
    tasks have up to a dozen options);
(b) style-transfer sampling: RLPrompt's sampling setting on a long context, 4 prompts on one
    input (``{prompt} "{x}" "``, a 5-word prompt, an input of ``--input-tokens`` words),
    N = 128 samples per (prompt, input) (32 x 4 bootstraps), top-k 10, up to 30 new tokens, cut at
    '"' (``TextGenerator.generate``); 1 in 40 words ends with '"', so samples end at varied
    lengths.

The input length defaults to 512 tokens. The cost the issue is about is the cache copied per
option / sample, N x context against context + N x new tokens; it matters when the context is
long next to the continuations (the issue names 4k-token contexts on a GPU). With 48-80-token
inputs and 30 new tokens, the two are of one size and the benchmark mostly measured the
interpreter and the weights; 512 tokens is 17 times the new tokens of (b) and still runs on one
CPU thread in minutes (longer contexts: ``--input-tokens 4096 --device cuda``).

Both paths use the same planner settings, by default those of a target on the device: on a CPU,
2,048 tokens per forward and a 2,048 MiB memory budget; on a GPU, no token cap (the memory budget
alone sets the batches). ``--tokens-per-batch none`` plans as on a GPU while running on a CPU. Each path runs in a fresh process,
so that the peak of one does not hide the other's: after the model is built and one small warm-up
call, the peak is reset, then the case runs once. Peak memory: resident set (VmHWM) on a CPU,
``torch.cuda.max_memory_allocated`` on a GPU; both include the model. On a CPU the workers run
with glibc's mmap threshold fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``): with glibc's default,
moving threshold, freed tensors stay in the heap and the resident peak counts what the allocator
kept rather than what was alive (for the shared path of (a) on the Llama-shaped model with
``--inputs 3``: 141 MB above the model against 91 MB live). ``model_mb`` is the memory held
before the call (the model, the inputs and, on a CPU, the interpreter and its libraries: about
750 MB), which neither path can shed; ``floor_ratio`` = ``model_mb`` / ``copy_peak_mb`` is the
peak ratio that a shared path adding nothing at all would reach. ``*_above_model_mb`` is the
peak less ``model_mb``. The case's results are compared: the largest difference of the options'
log-likelihoods (a), and whether greedy outputs (4 texts, 30 tokens) and the seeded samples are
identical (b). The words are a synthetic vocabulary of the model's size (a word-level
tokenizer; random weights give random text, which is all that is needed here).

One thread (``torch.set_num_threads(1)``), as on the shared CI machines; ``--threads`` changes it.
The JSON gives, per case, the whole-process peak of each path (``copy_peak_mb``,
``shared_peak_mb``, ``peak_ratio``), the peak the call adds (``*_above_model_mb``,
``above_model_ratio``), the times, the log-likelihood difference or greedy identity, and at the
top the input length and the number of threads.

    python benchmarks/prefix_sharing.py                    # both cases, both models, a table
    python benchmarks/prefix_sharing.py --json             # the same as JSON
    python benchmarks/prefix_sharing.py --layers 2 --width 128 --inputs 8 --samples 16 \
        --input-tokens 64                                  # quick
    python benchmarks/prefix_sharing.py --tokens-per-batch none  # GPU planning on a CPU
    python benchmarks/prefix_sharing.py --device cuda      # on a GPU (GPU planning)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from hardprompts.targets.choices import ChoiceScorer
from hardprompts.targets.generation import TextGenerator
from hardprompts.targets.hf import CPU_TOKENS_PER_BATCH

VOCAB = {"gpt2": 50257, "llama": 32000}
QUOTE = 7  # the id of the word '"' (the template's quotes and the stop string)
ENDS_EVERY = 40  # ids that are a multiple of this end with '"': 1 in 40 sampled words ends a row
BUDGET_MB = 2048  # the planners' memory budget (the targets' default)


def make_tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    """Word-level: id i is the word ``w<i>``, or ``w<i>"`` for every ENDS_EVERY-th id (so that
    samples end at varied lengths, as RLPrompt's end at the closing quote); id 0 is the end of
    text, QUOTE is '"'."""
    words = {f'w{i}"' if i % ENDS_EVERY == 0 else f"w{i}": i for i in range(1, vocab)}
    words["<eos>"] = 0
    words['"'] = words.pop(f"w{QUOTE}")
    tok = Tokenizer(models.WordLevel(words, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def make_model(family: str, layers: int, width: int, positions: int):
    torch.manual_seed(0)
    heads = max(1, width // 64)
    if family == "gpt2":
        cfg = GPT2Config(n_layer=layers, n_embd=width, n_head=heads, vocab_size=VOCAB[family],
                         n_positions=positions, eos_token_id=0, bos_token_id=0)  # fmt: skip
        return GPT2LMHeadModel(cfg).eval()
    cfg = LlamaConfig(
        num_hidden_layers=layers, hidden_size=width, intermediate_size=width * 8 // 3,
        num_attention_heads=heads, num_key_value_heads=max(1, heads // 3),
        vocab_size=VOCAB[family], max_position_embeddings=positions, eos_token_id=0, bos_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def choice_inputs(args, vocab: int):
    """(a): ``inputs`` prefixes of 0.75-1.25 x ``input_tokens`` ids, 12 continuations of 1-3 ids
    each."""
    rng = random.Random(1)
    lo, hi = max(1, args.input_tokens * 3 // 4), max(1, args.input_tokens * 5 // 4)
    prefixes = [
        [rng.randrange(QUOTE + 1, vocab) for _ in range(rng.randint(lo, hi))]
        for _ in range(args.inputs)
    ]
    options = [
        [[rng.randrange(QUOTE + 1, vocab) for _ in range(rng.randint(1, 3))] for _ in range(12)]
        for _ in range(args.inputs)
    ]
    return prefixes, options


def style_texts(vocab: int, input_words: int) -> list[str]:
    """(b): 4 prompts of 5 words on one input of ``input_words`` words, in RLPrompt's template."""
    rng = random.Random(2)

    def words(n: int) -> str:
        ids = (rng.randrange(QUOTE + 1, vocab) for _ in range(2 * n))
        return " ".join([f"w{i}" for i in ids if i % ENDS_EVERY][:n])

    source = words(input_words)
    return [f'{words(5)} " {source} " "' for _ in range(4)]


# ---------------------------------------------------------------------------------- one path


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return
    try:  # Linux: writing 5 resets the resident-set high-water mark (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # ru_maxrss then includes the setup


def memory_mb(device: str, key: str) -> float:
    """``key`` VmHWM (peak) or VmRSS (now) on a CPU; the CUDA allocator's peak / current."""
    if device == "cuda":
        torch.cuda.synchronize()
        fn = torch.cuda.max_memory_allocated if key == "VmHWM" else torch.cuda.memory_allocated
        return fn() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_path(args) -> dict:
    """One (model, case, path) in this process; returns its numbers and results."""
    torch.set_num_threads(args.threads)
    family, case, path = args.worker.split(":")
    model = make_model(family, args.layers, args.width, max(1024, 2 * args.input_tokens + 64))
    model = model.to(args.device)
    tok = make_tokenizer(VOCAB[family])
    share = path == "shared"
    tokens_per_batch = None if args.tokens_per_batch == "none" else int(args.tokens_per_batch)
    max_len = 2 * args.input_tokens + 64  # the model's positions (below) fit every sequence
    if case == "a":
        prefixes, options = choice_inputs(args, VOCAB[family])
        scorer = ChoiceScorer(
            model, tok, max_length=max_len, memory_budget_mb=BUDGET_MB, share_prefix=share,
            tokens_per_batch=tokens_per_batch,
        )  # fmt: skip
        scorer.logprobs_ids(prefixes[:1], options[:1])  # warm-up
        call = lambda: scorer.logprobs_ids(prefixes, options)  # noqa: E731
    else:
        texts = style_texts(VOCAB[family], args.input_tokens)
        gen = TextGenerator(
            model, tok, max_length=max_len, memory_budget_mb=BUDGET_MB, share_prefix=share,
            tokens_per_batch=tokens_per_batch,
        )  # fmt: skip
        kw = dict(max_new_tokens=30, stop='"', do_sample=True, top_k=10, seed=0)
        gen.generate(texts[:1], num_samples=2, **kw)  # warm-up
        call = lambda: gen.generate(texts, num_samples=args.samples, **kw)  # noqa: E731
    before = memory_mb(args.device, "VmRSS")
    reset_peak(args.device)
    t0 = time.perf_counter()
    with torch.no_grad():
        result = call()
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = memory_mb(args.device, "VmHWM")
    out = {"seconds": seconds, "peak_mb": peak, "above_model_mb": peak - before, "result": result}
    if case == "b":  # greedy outputs, after the measured call
        out["greedy"] = gen.generate(texts, max_new_tokens=30, stop='"')
    return out


# ---------------------------------------------------------------------------------- driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--models", default="gpt2,llama")
    parser.add_argument("--cases", default="a,b", help="a: multiple choice; b: sampling")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--inputs", type=int, default=64, help="(a) inputs, 12 options each")
    parser.add_argument("--samples", type=int, default=128, help="(b) N per (prompt, input)")
    parser.add_argument(
        "--input-tokens", type=int, default=512, help="input (context) length; see the docstring"
    )
    parser.add_argument(
        "--tokens-per-batch",
        default="auto",
        help="the planners' cap on tokens per forward: a number, 'none', or 'auto' (the targets' "
        "default: 2048 on a CPU, none on a GPU)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # model:case:path, in a subprocess
    args = parser.parse_args()
    if args.tokens_per_batch == "auto":  # as the targets choose (HFTarget, tokens_per_batch)
        args.tokens_per_batch = str(CPU_TOKENS_PER_BATCH) if args.device == "cpu" else "none"
    if args.worker:
        print(json.dumps(run_path(args)))
        return

    started = time.perf_counter()
    report: dict = {
        "threads": args.threads,
        "input_tokens": args.input_tokens,
        "inputs_a": args.inputs,
        "texts_b": "4 prompts x 1 input",
        "samples_b": args.samples,
        "device": args.device,
        "tokens_per_batch": args.tokens_per_batch,
        "memory_budget_mb": BUDGET_MB,
        "memory": "torch.cuda.max_memory_allocated" if args.device == "cuda" else "peak RSS",
        "model": f"{args.layers} layers x {args.width}",
        "cases": {},
    }
    if not args.json:
        print(f"{report['model']}, {args.threads} thread(s) on {args.device}; peak memory = "
              f"{report['memory']} (model included), each path in its own process")  # fmt: skip
    for family in args.models.split(","):
        for case in args.cases.split(","):
            runs = {}
            for path in ("copy", "shared"):
                cmd = [sys.executable, __file__, "--worker", f"{family}:{case}:{path}"]
                for name in ("layers", "width", "inputs", "samples", "threads", "device"):
                    cmd += [f"--{name}", str(getattr(args, name))]
                cmd += ["--input-tokens", str(args.input_tokens)]
                cmd += ["--tokens-per-batch", args.tokens_per_batch]
                env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}  # see docstring
                done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if done.returncode != 0:
                    sys.exit(f"{family}:{case}:{path} failed:\n{done.stderr}")
                runs[path] = json.loads(done.stdout.strip().splitlines()[-1])
            copy, shared = runs["copy"], runs["shared"]
            model_mb = copy["peak_mb"] - copy["above_model_mb"]
            row = {
                "model_mb": round(model_mb, 1),
                "floor_ratio": round(model_mb / copy["peak_mb"], 3),
                "copy_peak_mb": round(copy["peak_mb"], 1),
                "shared_peak_mb": round(shared["peak_mb"], 1),
                "peak_ratio": round(shared["peak_mb"] / copy["peak_mb"], 3),
                "copy_above_model_mb": round(copy["above_model_mb"], 1),
                "shared_above_model_mb": round(shared["above_model_mb"], 1),
                "above_model_ratio": round(shared["above_model_mb"] / copy["above_model_mb"], 3),
                "copy_seconds": round(copy["seconds"], 2),
                "shared_seconds": round(shared["seconds"], 2),
            }
            if case == "a":
                a = [v for r in copy["result"] for v in r]
                b = [v for r in shared["result"] for v in r]
                row["options"] = len(a)
                row["max_ll_diff"] = max(abs(x - y) for x, y in zip(a, b, strict=True))
                row["argmax_identical"] = all(
                    max(range(len(p)), key=p.__getitem__) == max(range(len(q)), key=q.__getitem__)
                    for p, q in zip(copy["result"], shared["result"], strict=True)
                )
            else:
                pairs = [
                    (x, y)
                    for p, q in zip(copy["result"], shared["result"], strict=True)
                    for x, y in zip(p, q, strict=True)
                ]
                row["samples"] = len(pairs)
                row["greedy_identical"] = copy["greedy"] == shared["greedy"]
                row["sampled_identical_fraction"] = sum(x == y for x, y in pairs) / len(pairs)
            name = f"{family}:{'a_choices' if case == 'a' else 'b_sampling'}"
            report["cases"][name] = row
            if not args.json:
                print(f"{name:16s} " + "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"(benchmark wall time {report['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
