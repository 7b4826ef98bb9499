"""Seconds per style-transfer reward step: hardprompts' task against a naive loop, same process.

One RLPrompt training step's reward (METHODS.md 9): 8 prompts, 2 inputs (4 prompts each), N =
num_samples x num_bootstraps sampled rewrites per (prompt, input), each scored for content and
style; then bootstrap max and the per-input z-score. Both sides use the same models and process:

* ours: ``StyleTransferTask.train_rewards``: per input one batched generate call for its 4
  prompts (each prompt+input prefix computed once, its key/value cache shared by the N samples,
  incremental decoding), then one batched content call and one batched style call over the 4·N
  outputs (each scorer de-duplicates repeats and encodes the source once);
* naive (written here, in the style of a per-sample reference loop): every sample generated on
  its own, token by token, with the whole prefix through the LM at every token (no cache, no
  sharing); every output scored with its own content-model call and its own style-model call.

Models: ``builtin:yelp-small`` (the generator), ``builtin:minilm`` (content) and
``builtin:yelp-style`` (style), all offline (the ``style`` extra). Inputs: the first negative
reviews of the shipped demo set. Sampling: top-k 10, cut at the closing quote, at most
``max(1.5 n, n + 10)`` new tokens (RLPrompt). Absolute seconds on a shared machine are noisy; the
ratio is the result.

    python benchmarks/style_step.py --threads 1                        # N = 32 (8 x 4)
    python benchmarks/style_step.py --threads 1 --num-samples 32       # RLPrompt's N = 128
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hardprompts.config import load_config
from hardprompts.demo import DEMO_DATA
from hardprompts.tasks import RLPromptReward, build_task
from hardprompts.tasks.style import apply_template, bootstrap_max, postprocess

PROMPTS = ["Rewrite it positively:", "Make it nice:", "good great", "Here is a happy version",
           "The same, but happy:", "positive review", "Say it kindly:", "love it"]  # fmt: skip


def naive_sample(model, tokenizer, ids: list[int], cap: int, top_k: int, gen) -> str:
    """One sample, token by token, the whole sequence through the model at every token."""
    ids = list(ids)
    start = len(ids)
    for _ in range(cap):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        kth = logits.topk(top_k).values[-1]
        probs = logits.masked_fill(logits < kth, float("-inf")).softmax(-1)
        nxt = int(torch.multinomial(probs, 1, generator=gen))
        if nxt == tokenizer.eos_token_id:
            break
        ids.append(nxt)
        if '"' in tokenizer.decode(ids[start:]):
            break
    return tokenizer.decode(ids[start:], skip_special_tokens=True).split('"')[0]


def naive_step(task, prompts: list[str], inputs: list[str], seed: int) -> torch.Tensor:
    cfg = task.config
    model, tokenizer = task.target.model, task.target.tokenizer
    encode = task.target._generator.encode  # the same prefix tokens as ours (BOS + text)
    gen = torch.Generator().manual_seed(seed)
    n_out = cfg.num_samples * cfg.num_bootstraps
    rewards = []
    for j, text in enumerate(inputs):
        cap = task._cap(text)
        for prompt in prompts[j * cfg.num_repeats : (j + 1) * cfg.num_repeats]:
            row = []
            for _ in range(n_out):
                prefix = encode(apply_template(task.template, prompt, text))
                out = naive_sample(model, tokenizer, prefix, cap, cfg.top_k, gen)
                out = postprocess(out, task.lower)
                content = float(task.models.content([text], [out])[0])  # one call per output
                style = float(100 * task.models.style.probs([out])[0, task.target_style])
                row.append((content + style) / 2)
            rewards.append(row)
    return bootstrap_max(torch.tensor(rewards), cfg.num_bootstraps).mean(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (stated in the output)")
    p.add_argument("--num-samples", type=int, default=8, help="samples per bootstrap group")
    p.add_argument("--num-bootstraps", type=int, default=4)
    p.add_argument("--steps", type=int, default=1, help="timed steps per side")
    p.add_argument("--naive-steps", type=int, default=1, help="timed naive steps")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(None, [
        "task.kind=style_transfer", f"task.dataset={DEMO_DATA}", "task.target_style=1",
        f"task.num_samples={args.num_samples}", f"task.num_bootstraps={args.num_bootstraps}",
        "task.num_repeats=4", "task.lower_outputs=true",
        "target.model=builtin:yelp-small", "target.kind=causal", "target.device=cpu",
        "reward.content_model=builtin:minilm", "reward.style_model=builtin:yelp-style",
        "reward.fluency_model=lm:builtin:yelp-small", "reward.device=cpu",
    ])  # fmt: skip
    task = build_task(cfg)
    data = task.split("train")
    inputs = data.sources[:2]

    task.train_rewards(PROMPTS, RLPromptReward(), examples=[0, 1])  # warm-up (allocations)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        ours = task.train_rewards(PROMPTS, RLPromptReward(), examples=[0, 1])
    t_ours = (time.perf_counter() - t0) / args.steps

    t0 = time.perf_counter()
    for s in range(args.naive_steps):
        naive = naive_step(task, PROMPTS, inputs, seed=s)
    t_naive = (time.perf_counter() - t0) / args.naive_steps

    n_out = args.num_samples * args.num_bootstraps
    result = {
        "threads": args.threads,
        "prompts": len(PROMPTS),
        "inputs": len(inputs),
        "outputs_per_pair": n_out,
        "ours_seconds_per_step": round(t_ours, 3),
        "naive_seconds_per_step": round(t_naive, 3),
        "speedup": round(t_naive / t_ours, 2),
        "ours_mean_reward": round(float(ours.reward.mean()), 2),
        "naive_mean_reward": round(float(naive.mean()), 2),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
