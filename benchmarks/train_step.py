"""Seconds per RL training step (RLPrompt's settings) and its split: sampling, reward, update.

hardprompts' step (``SoftQPrompt.step``: one KV-cached batched sampling pass, the target scored in
batched forwards that read only the verbalizer rows at the scored position, a causal target
whose prompts attend to one shared copy of each input's key/value cache, Q recomputed from the
stored hidden states) against a naive step written here as a stand-in for the reference
implementation (mingkaid/rl-prompt):

* the reward as a Python loop over prompts, one padded forward of the target over all examples
  per prompt, with full-vocabulary logits at every position: this is what the reference does,
  and on a CPU it is about 98 % of a step;
* sampling without a key/value cache (the whole prefix through the policy LM at every token),
  and an update that runs the policy LM again over the sampled prompts (teacher forcing) for the
  online Q and through a deep copy of it (the target network) for Q', then a Polyak average
  over the whole copy. The reference is faster in this part: it samples with a key/value cache,
  reuses the sampling pass's logits as the online Q, and its optimiser updates only the
  3.15M-parameter MLP head (it does deep-copy the whole LM as its target network). Since this
  part is about 2 % of a step, the stand-in's step was within 2-6 % of the real code's time when
  the two were run side by side on these shapes (measured outside this repository, with the
  reference's own code; see docs/results/benchmarks.md).

Like the reference, the naive reward pads each prompt's batch of 32 inputs to the longest one
(2.1x the real tokens on these inputs): that, more than the verbalizer-only head, is the masked
target's gap. The reference also inserts the prompt with a leading space, one token more per
input than here (not imitated).

Both use the same maths (gap reward 200/180, z-score, x5, loss (v2 + v3)/2, Adam, clip 5) and the
naive reward is checked against hardprompts' on two prompts before anything is timed. Models are
random (no downloads): a policy shaped like distilgpt2 (6 layers, 768 wide), a masked target
shaped like distilroberta-base (6 layers, 768), and a causal target shaped like the policy, all
with a vocabulary of 8,192 (a byte-level BPE trained on Yelp sentences of the data tree's tst/).
The step scores 16 prompts of 5 tokens on the 32 SST-2 training examples (split 16-42); the
reward cache is off so that every step pays for its scoring. Each case runs in its own process,
so that the peak resident memory printed (``resource.getrusage``) is that case's own.

    python benchmarks/train_step.py                   # 1 timed step per case, no warm-up
    python benchmarks/train_step.py --steps 3 --warmup 1          # steadier numbers
    python benchmarks/train_step.py --threads 8 --device cuda --warmup 1   # a dedicated machine
    python benchmarks/train_step.py --layers 2 --width 64 --vocab 2048    # quick check
    python benchmarks/train_step.py --data /path/to/data      # a data tree (fsc/, tst/) elsewhere

The data tree is found as the library finds it: ``$HARDPROMPTS_DATA_DIR``, else the cache that
``hardprompts data fetch sst-2 yelp-sentiment`` fills.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
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

from hardprompts.config import TaskConfig, load_config
from hardprompts.functional import soft_policy, sql_loss
from hardprompts.policy import build_head, polyak_update
from hardprompts.rewards import shaped_reward, task_reward
from hardprompts.targets.hf import HFTarget
from hardprompts.tasks import ClassificationTask, load_split
from hardprompts.training import RunContext

REPO = Path(__file__).resolve().parents[1]
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<|endoftext|>"]
VERBALIZERS = [" terrible", " great"]
TEMPLATES = {"masked": "{x} {prompt} {mask} .", "causal": "{x} {prompt}"}


# ----------------------------------------------------------------------------------------------
# Models and tokenizers (random weights, built here)
# ----------------------------------------------------------------------------------------------


def default_data_root() -> Path:
    """The data tree's root holding SST-2 (``fsc/``) and the Yelp sentences (``tst/``), as the
    library finds them (:mod:`hardprompts.datastore`): ``$HARDPROMPTS_DATA_DIR``, else the cache
    that ``hardprompts data fetch`` fills. Nothing is downloaded; absent, exits with the fixes."""
    from hardprompts import datastore

    need = [datastore.dataset("sst-2"), datastore.dataset("yelp-sentiment")]
    roots = [folder.parent for folder in datastore.places(need[0])]
    for root in roots:
        if all(ds.present_in(root / ds.folder) for ds in need):
            return root
    raise SystemExit(
        f"SST-2 and the Yelp sentences not found together in {', '.join(map(str, roots))}. Fix: "
        "run `hardprompts data fetch sst-2 yelp-sentiment`, or set HARDPROMPTS_DATA_DIR to a "
        "folder holding fsc/ and tst/, or pass --data"
    )


def train_tokenizer(vocab: int, out: Path, shared: Path) -> None:
    """A byte-level BPE of ``vocab`` tokens, saved as a GPT-2-style and a RoBERTa-style tokenizer."""
    lines: list[str] = []
    for name in ("sentiment.dev.0.clean", "sentiment.dev.1.clean"):
        lines += (shared / "tst" / "yelp" / "clean" / name).read_text().splitlines()[:20000]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab - 1,  # + <mask> for the masked tokenizer
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines + [" terrible", " great"] * 100, trainer)
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    ).save_pretrained(str(out / "causal"))
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True)])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    ).save_pretrained(str(out / "masked"))


def make_model(kind: str, layers: int, width: int, vocab: int, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "causal":
            cfg = GPT2Config(
                n_layer=layers, n_embd=width, n_head=max(1, width // 64), vocab_size=vocab,
                n_positions=1024, bos_token_id=4, eos_token_id=4,
            )  # fmt: skip
            return GPT2LMHeadModel(cfg).eval()
        cfg = RobertaConfig(
            num_hidden_layers=layers, hidden_size=width, num_attention_heads=max(1, width // 64),
            intermediate_size=4 * width, vocab_size=vocab, max_position_embeddings=514,
            pad_token_id=1, bos_token_id=0, eos_token_id=2,
        )  # fmt: skip
        return RobertaForMaskedLM(cfg).eval()


# ----------------------------------------------------------------------------------------------
# The naive reference step
# ----------------------------------------------------------------------------------------------


class NaiveStep:
    """One RLPrompt step as the reference code computes it (see the module docstring)."""

    def __init__(self, policy_lm, tokenizer, target: HFTarget, texts, labels, args) -> None:
        self.lm, self.tok, self.target = policy_lm, tokenizer, target
        self.texts, self.labels = texts, torch.tensor(labels)
        self.P, self.T, self.top_k = args.prompts, args.length, 256
        d = policy_lm.config.n_embd
        torch.manual_seed(0)
        self.head = build_head(d, 2048, residual=False).to(args.device)
        # The reference's target network is a deep copy of the whole model (LM + head).
        self.target_lm, self.target_head = copy.deepcopy(policy_lm), copy.deepcopy(self.head)
        self.optimizer = torch.optim.Adam(self.head.parameters(), lr=5e-5)
        self.generator = torch.Generator(device=args.device).manual_seed(0)
        self.device = args.device

    def q(self, lm, head, inputs):  # Q = W_LM · ψ(h), [P, L, V]
        h = lm.transformer(input_ids=inputs, use_cache=False).last_hidden_state
        return lm.lm_head(head(h))

    @torch.no_grad()
    def sample(self) -> torch.Tensor:
        prefix = torch.full((self.P, 1), self.lm.config.bos_token_id, device=self.device)
        for _ in range(self.T):  # no cache: the whole prefix again at every token
            q = self.q(self.lm, self.head, prefix)[:, -1]
            probs = soft_policy(q, 1.0, "shannon")
            kth = probs.topk(self.top_k, dim=-1).indices
            probs = torch.zeros_like(probs).scatter_(-1, kth, probs.gather(-1, kth))
            a = torch.multinomial(probs, 1, generator=self.generator)
            prefix = torch.cat([prefix, a], dim=1)
        return prefix[:, 1:]

    @torch.no_grad()
    def task_rewards(self, prompts: list[str]) -> torch.Tensor:
        t, rewards = self.target, []
        mask = self.target.tokenizer.mask_token
        for prompt in prompts:  # one padded forward per prompt, full logits everywhere
            filled = [
                TEMPLATES[t.kind].format(x=x, prompt=prompt.strip(), mask=mask) for x in self.texts
            ]
            enc = t.tokenizer(filled, padding=True, return_tensors="pt").to(self.device)
            logits = t.model(**enc).logits  # [N, L, V]
            if t.kind == "masked":
                pos = (enc["input_ids"] == t.tokenizer.mask_token_id).nonzero()[:, 1]
            else:
                pos = enc["attention_mask"].sum(1) - 1
            rows = logits[torch.arange(len(filled)), pos][:, t.verbalizer_ids].cpu()  # [N, C]
            rewards.append(task_reward(rows[None], self.labels)[0])
        return torch.stack(rewards)

    def step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        tokens = self.sample()
        prompts = self.tok.batch_decode(tokens)
        t1 = time.perf_counter()
        reward = shaped_reward(self.task_rewards(prompts)).to(self.device)
        t2 = time.perf_counter()
        bos = torch.full((self.P, 1), self.lm.config.bos_token_id, device=self.device)
        inputs = torch.cat([bos, tokens[:, :-1]], dim=1)  # teacher forcing
        q = self.q(self.lm, self.head, inputs)
        with torch.no_grad():
            q_target = self.q(self.target_lm, self.target_head, inputs)
        loss = sql_loss(q, q_target, tokens, reward, variant="v2_v3", entropy="shannon")
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.head.parameters(), 5.0)
        self.optimizer.step()
        polyak_update(  # over the whole copy, as the reference does
            [*self.target_lm.parameters(), *self.target_head.parameters()],
            [*self.lm.parameters(), *self.head.parameters()],
            0.001,
        )
        t3 = time.perf_counter()
        return {"sample": t1 - t0, "reward": t2 - t1, "update": t3 - t2}


# ----------------------------------------------------------------------------------------------
# One case (run in a child process)
# ----------------------------------------------------------------------------------------------


def run_case(kind: str, impl: str, args) -> dict:
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    train = load_split(
        TaskConfig(data_dir=str(Path(args.data) / "fsc"), split_seed="16-42"), "train", 2
    )
    texts, labels = train.texts[: args.examples], train.labels[: args.examples]
    tok = PreTrainedTokenizerFast.from_pretrained(str(work / "tok" / kind))
    model = make_model(kind, args.layers, args.width, args.vocab, seed=1).to(args.device)
    target = HFTarget(model, tok, kind, TEMPLATES[kind], VERBALIZERS)

    if impl == "ours":
        cfg = load_config(
            None,
            [
                "algorithm.name=rlprompt",
                "algorithm.reward_cache=false",
                f"algorithm.prompts_per_step={args.prompts}",
                f"policy.model={work / 'policy'}",
                f"policy.prompt_length={args.length}",
                f"policy.device={args.device}",
                "train.seed=0",
            ],
        )
        split = type(train)("train", texts, labels, train.source)
        task = ClassificationTask(target, splits={"train": split, "dev": split})
        ctx = RunContext(cfg, task, work / "unused")
        algo = cfg.algorithm.make(ctx)

        def step(i: int) -> dict[str, float]:
            v = algo.step(i)
            return {k: v[f"charts/{k}_seconds"] for k in ("sample", "reward", "update")}
    else:
        policy_lm = GPT2LMHeadModel.from_pretrained(str(work / "policy")).to(args.device).eval()
        policy_lm.requires_grad_(False)
        policy_tok = PreTrainedTokenizerFast.from_pretrained(str(work / "policy"))
        naive = NaiveStep(policy_lm, policy_tok, target, texts, labels, args)
        # The naive reward must equal hardprompts' before it is timed.
        check = [" the food was", " great place and"]
        ours = task_reward(target.score(check, texts), torch.tensor(labels))
        torch.testing.assert_close(naive.task_rewards(check), ours, atol=1e-3, rtol=1e-4)
        step = lambda i: naive.step()  # noqa: E731

    for i in range(args.warmup):
        step(i)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    splits = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        s = step(args.warmup + i)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        s["total"] = time.perf_counter() - t0
        splits.append(s)
    mean = {k: sum(s[k] for s in splits) / len(splits) for k in splits[0]}
    mean["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.device.startswith("cuda"):
        mean["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return mean


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1, help="timed steps per case (mean)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="untimed steps first (default 0: a CPU step takes tens of seconds, so one-time "
        "costs are a small part of it; use 1 on a GPU)",
    )
    parser.add_argument("--prompts", type=int, default=16, help="prompts per step (RLPrompt: 16)")
    parser.add_argument("--examples", type=int, default=32, help="SST-2 training examples")
    parser.add_argument("--length", type=int, default=5, help="prompt tokens T")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per case (default 1: on a shared CPU, threads that wait for busy "
        "cores made every step several times slower; raise it on a dedicated machine)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--data",
        default=None,
        help="the data tree (holds fsc/ and tst/; default: $HARDPROMPTS_DATA_DIR, else the "
        "`hardprompts data fetch` cache)",
    )
    parser.add_argument("--targets", default="masked,causal")
    parser.add_argument("--impls", default="ours,naive")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # kind:impl, run in a child process
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:
        kind, impl = args.case.split(":")
        print(json.dumps(run_case(kind, impl, args)))
        return

    args.data = args.data or str(default_data_root())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hp-train-step-") as work:
        train_tokenizer(args.vocab, Path(work) / "tok", Path(args.data))
        make_model("causal", args.layers, args.width, args.vocab, seed=0).save_pretrained(
            str(Path(work) / "policy")
        )
        PreTrainedTokenizerFast.from_pretrained(str(Path(work) / "tok" / "causal")).save_pretrained(
            str(Path(work) / "policy")
        )
        print(
            f"RLPrompt step: {args.prompts} prompts x {args.length} tokens, {args.examples} SST-2 "
            f"examples; policy {args.layers}x{args.width} vocab {args.vocab}; {args.threads} "
            f"threads on {args.device}; {args.warmup} warm-up + {args.steps} timed step(s)"
        )
        print(f"{'target':7s} {'impl':6s} {'s/step':>8s} {'sample':>8s} {'reward':>8s} "
              f"{'update':>8s} {'peak RSS MB':>12s}")  # fmt: skip
        results: dict[tuple[str, str], dict] = {}
        for kind in args.targets.split(","):
            for impl in args.impls.split(","):
                cmd = [sys.executable, __file__, "--case", f"{kind}:{impl}", "--work", work]
                for name in ("steps", "warmup", "prompts", "examples", "length", "layers",
                             "width", "vocab", "threads", "device", "data"):  # fmt: skip
                    cmd += [f"--{name}", str(getattr(args, name))]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{kind}:{impl} failed:\n{done.stderr}")
                r = results[kind, impl] = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{kind:7s} {impl:6s} {r['total']:8.2f} {r['sample']:8.2f} {r['reward']:8.2f} "
                      f"{r['update']:8.2f} {r['peak_rss_mb']:12.0f}", flush=True)  # fmt: skip
        for kind in args.targets.split(","):
            if (kind, "ours") in results and (kind, "naive") in results:
                ours, naive = results[kind, "ours"], results[kind, "naive"]
                parts = "  ".join(
                    f"{k} {naive[k] / ours[k]:.1f}x" for k in ("sample", "reward", "update")
                )
                print(f"{kind} target: naive / hardprompts = {naive['total'] / ours['total']:.2f}x "
                      f"per step ({parts})")  # fmt: skip
    print(f"(benchmark wall time {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
