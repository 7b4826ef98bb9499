"""The prompt-writing agent of StablePrompt (Kwon et al., EMNLP 2024).

Docs: Methods › StablePrompt (APPO) and Methods › Sample-and-select.

An agent LLM reads a *meta-prompt* holding k input-output demonstrations from the training split
(drawn by the task, :meth:`hardprompts.tasks.PromptTask.demonstrations`; for classification the
output is the label word) and writes the instruction that would produce
them. The text it writes, cut at a stop sequence, is the prompt the target is scored with.

What this module holds, top to bottom:

* :class:`AgentConfig`: the config fields shared by the agent-based algorithms (``appo`` and
  ``search``), each documented with the source of its default;
* :class:`PromptPool`: the k best distinct prompts by training reward (the dev candidates);
* :class:`PromptAgent`: the agent LM. Frozen (``search``), or with two LoRA adapters on the same
  base model (``appo``): ``"policy"`` (trainable) and ``"anchor"`` (an explicit snapshot of the
  policy's adapter weights, copied exactly in either direction), plus a value head. It builds
  meta-prompts, samples prompts reproducibly (its own decoding loop, so a ``torch.Generator``
  drives every draw) and recomputes token log-probabilities and values for PPO.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, NamedTuple

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from hardprompts.config import (
    AlgorithmConfig,
    DeviceMap,
    MaxMemory,
    check_placement,
    device_map_field,
    max_memory_field,
)
from hardprompts.errors import ConfigError
from hardprompts.modeling import cache_keyword, choose_next, output_cache

__all__ = [
    "ANCHOR",
    "POLICY",
    "AgentConfig",
    "PromptAgent",
    "PromptPool",
    "Rollout",
]

POLICY = "policy"
ANCHOR = "anchor"

# Our own wording, in the spirit of the instruction-induction meta-prompt StablePrompt uses
# ("I gave a friend an instruction and five inputs ..."). {num_demos} and {demos} are filled in.
DEFAULT_META_PROMPT = (
    "I wrote an instruction for a friend and then gave them {num_demos} inputs. My friend "
    "followed the instruction and produced an output for each input. These are the inputs and "
    "the outputs my friend produced:\n\n{demos}\n\n"
)
DEFAULT_ANSWER_PREFIX = "The instruction I wrote was:"
DEFAULT_DEMO_TEMPLATE = "Input: {x}\nOutput: {y}"
# The agent when policy.model is not set: a small instruction model (our choice; StablePrompt used
# 7B-8B instruction models such as gemma-1.1-7b-it and Llama-3-8B-Instruct). It must already be
# available locally (Hugging Face cache or a folder): nothing downloads where the hub is
# unreachable.
DEFAULT_AGENT = "Qwen/Qwen2.5-0.5B-Instruct"


class AgentConfig(AlgorithmConfig):
    """Fields shared by the StablePrompt algorithms: the agent, its meta-prompt, sampling, reward."""

    agent_model: str | None = Field(
        None,
        description="Deprecated alias of policy.model, the field that names the model writing "
        "the prompt for every method (here the agent; unset: " + DEFAULT_AGENT + "). Setting it "
        "moves its value to policy.model with a warning; setting both to different models is "
        "an error.",
    )
    agent_device: str = Field("auto", description="torch device of the agent; auto = cuda if any.")
    agent_device_map: DeviceMap | None = device_map_field("agent (its LoRA adapters follow)")
    agent_max_memory: MaxMemory | None = max_memory_field()
    agent_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32",
        description="Agent weights' dtype (LoRA weights stay float32). StablePrompt: bfloat16.",
    )
    num_demos: int = Field(
        5,
        ge=1,
        description="Demonstrations k in each meta-prompt. StablePrompt: 5 ('five inputs').",
    )
    demo_max_tokens: int = Field(
        128,
        ge=1,
        description="A demonstration's input is cut to this many agent tokens (our choice).",
    )
    meta_prompt: str = Field(
        DEFAULT_META_PROMPT,
        description=(
            "Text before the agent's answer; {demos} is replaced by the demonstrations and "
            "{num_demos} by k. Default: our wording of StablePrompt's instruction-induction prompt."
        ),
    )
    demo_template: str = Field(
        DEFAULT_DEMO_TEMPLATE,
        description="One demonstration; {x} the input, {y} its label word. Demonstrations are "
        "joined by a blank line (our choice, matching the target template's Input/Output words).",
    )
    answer_prefix: str = Field(
        DEFAULT_ANSWER_PREFIX,
        description="Text the agent continues (it opens the assistant turn under a chat template). "
        "StablePrompt's release: 'The Instruction is : '.",
    )
    chat_template: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "Wrap the meta-prompt in the tokenizer's chat template as a user turn. auto: when the "
            "tokenizer has one (instruction models do). StablePrompt's release used it."
        ),
    )
    max_prompt_tokens: int = Field(
        64,
        ge=1,
        description="Longest prompt the agent may write, in agent tokens. StablePrompt's release: "
        "100, without a stop sequence; ours stops at `stop` too.",
    )
    stop: list[str] = Field(
        default_factory=lambda: ["\n"],
        description="The prompt ends before the first of these strings (leading whitespace is "
        "skipped first) or at EOS (our choice: one line of instruction).",
    )
    temperature: float = Field(
        1.0, gt=0, description="Sampling temperature. StablePrompt's release: 1 (plain sampling)."
    )
    top_k: int = Field(
        0, ge=0, description="Sample among the k likeliest tokens; 0 = off (StablePrompt: 0)."
    )
    top_p: float = Field(
        1.0, gt=0, le=1, description="Nucleus sampling mass; 1 = off (StablePrompt: 1.0)."
    )
    prompts_per_query: int = Field(
        4, ge=1, description="Prompts sampled per meta-prompt. StablePrompt: 4 (Kwon et al. 2024)."
    )
    queries_per_step: int = Field(
        1,
        ge=1,
        description="Meta-prompts (fresh demonstrations each) per step. StablePrompt's release: 1.",
    )
    reward_batch_size: int | None = Field(
        16,
        ge=1,
        description=(
            "Training examples each step's prompts are scored on (one pass over a shuffled train "
            "split per epoch); null = the whole train split. StablePrompt's release: 16."
        ),
    )
    reward_accuracy_weight: float = Field(
        30.0,
        description="Weight of accuracy in the reward. StablePrompt: 30 (its classification and "
        "instruction-induction code); its BIG-bench multiple-choice code uses 3 (with margin 0.05): "
        "set 3 and 0.05 to reproduce that. A generation task uses this weight only (no margin).",
    )
    reward_margin_weight: float = Field(
        0.01,
        description="Weight of the label-word logit margin (multiple choice: the option "
        "log-likelihood margin) in the reward. StablePrompt: 0.01 (classification); 0.05 in its "
        "BIG-bench multiple-choice code.",
    )
    select_top: int = Field(
        5,
        ge=1,
        description="The best distinct sampled prompts by train reward that go to each dev "
        "evaluation. StablePrompt's release kept a top-5 queue (and chose on test; we use dev).",
    )

    def resolve_policy(self, policy) -> None:
        """Make ``policy.model`` name the agent (called by :class:`~hardprompts.config.Config`).

        The agent is ``policy.model`` as for every method; unset, :data:`DEFAULT_AGENT`. The old
        field ``algorithm.agent_model`` still works, with a warning, and is then cleared.
        """
        explicit = "model" in policy.model_fields_set
        if self.agent_model is not None:
            if explicit and policy.model != self.agent_model:
                raise ValueError(
                    f"algorithm.agent_model ({self.agent_model!r}) and policy.model "
                    f"({policy.model!r}) both name the model that writes the prompt; set "
                    "policy.model only (algorithm.agent_model is its deprecated alias)"
                )
            warnings.warn(
                "algorithm.agent_model is deprecated: the model that writes the prompt is "
                f"policy.model for every method; using policy.model = {self.agent_model!r}",
                FutureWarning,
                stacklevel=2,
            )
            policy.model = self.agent_model
            self.agent_model = None
        elif not explicit:
            policy.model = DEFAULT_AGENT

    @field_validator("meta_prompt")
    @classmethod
    def _meta_has_demos(cls, value: str) -> str:
        if "{demos}" not in value:
            raise ValueError("the meta-prompt must contain {demos} (where the demonstrations go)")
        return value

    @field_validator("demo_template")
    @classmethod
    def _demo_has_slots(cls, value: str) -> str:
        if "{x}" not in value or "{y}" not in value:
            raise ValueError("the demonstration template must contain {x} and {y}")
        return value

    @field_validator("stop")
    @classmethod
    def _stops_nonempty(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("stop strings must not be empty")
        return value

    @model_validator(mode="after")
    def _agent_placement(self) -> AgentConfig:
        check_placement(
            "algorithm.agent_", self.agent_device, self.agent_device_map, self.agent_max_memory
        )
        return self


class PromptPool:
    """The ``k`` best distinct prompts by training reward, best first (ties: the earlier step).

    A prompt sampled again keeps its best reward. The pool is what goes to dev: prompts are
    chosen on dev only, among the train-best candidates.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.entries: list[dict[str, Any]] = []

    def add(self, prompt: str, reward: float, accuracy: float | None, step: int) -> None:
        """Offer a scored prompt (``accuracy``: its train accuracy where the task has one)."""
        for entry in self.entries:
            if entry["prompt"] == prompt:
                if reward > entry["reward"]:
                    entry.update(reward=reward, accuracy=accuracy, step=step)
                break
        else:
            self.entries.append(
                {"prompt": prompt, "reward": reward, "accuracy": accuracy, "step": step}
            )
        self.entries.sort(key=lambda e: (-e["reward"], e["step"]))  # stable: insertion order
        del self.entries[self.k :]

    def prompts(self) -> list[str]:
        return [e["prompt"] for e in self.entries]

    def state_dict(self) -> dict[str, Any]:
        return {"entries": [dict(e) for e in self.entries]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.entries = [dict(e) for e in state["entries"]]


class Rollout(NamedTuple):
    """Prompts sampled from the agent: ``per_query`` rows for each meta-prompt, in query order.

    Attributes:
        queries: Q tensors [Lq] long, the meta-prompt token ids.
        per_query: n, rows per query; row b belongs to query b // n.
        response: [B, T] long, B = Q·n sampled tokens, padded after each row's end.
        mask: [B, T] bool, True on the tokens the agent took (up to and including the token that
            completed the stop string or the EOS token).
        texts: B prompts: the decoded response cut before the stop string, stripped.
    """

    queries: list[Tensor]
    per_query: int
    response: Tensor
    mask: Tensor
    texts: list[str]


class PromptAgent:
    """A causal LM that writes prompts from meta-prompts; optionally with policy/anchor LoRA.

    With ``lora`` (a ``peft.LoraConfig``) the model gets two adapters of that config on the same
    base weights, ``"policy"`` (trainable) and ``"anchor"`` (frozen; set equal to the policy at
    creation), and a value head ``Linear(d, 1)`` on the final hidden states (zero-initialised, so
    V = 0 at first: our choice). Without ``lora`` the agent is frozen (sample-and-select).

    The policy is π(a | s) = softmax(logits / temperature) over the whole vocabulary; ``top_k`` and
    ``top_p`` only restrict sampling (keep them off for PPO, as StablePrompt did, so that the
    sampled tokens follow π).

    Args:
        model: a causal LM (frozen: eval mode, no gradients).
        tokenizer: its tokenizer (with a pad token).
        lora: LoRA settings for the policy and anchor adapters, or None for a frozen agent.
        seed: seed of the LoRA initialisation (drawn in a forked RNG; the global one is untouched).
        The remaining arguments are the :class:`AgentConfig` fields of the same names.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        *,
        lora=None,
        seed: int = 0,
        meta_prompt: str = DEFAULT_META_PROMPT,
        demo_template: str = DEFAULT_DEMO_TEMPLATE,
        answer_prefix: str = DEFAULT_ANSWER_PREFIX,
        chat_template: Literal["auto", "on", "off"] = "auto",
        demo_max_tokens: int = 128,
        max_prompt_tokens: int = 64,
        stop: Sequence[str] = ("\n",),
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
    ) -> None:
        self.tokenizer = tokenizer
        self.meta_prompt = meta_prompt
        self.demo_template = demo_template
        self.answer_prefix = answer_prefix
        has_chat = getattr(tokenizer, "chat_template", None) is not None
        if chat_template == "on" and not has_chat:
            raise ConfigError(
                "algorithm.chat_template is 'on' but the agent's tokenizer has no chat template; "
                "set it to 'off' (or 'auto')"
            )
        self.use_chat = chat_template == "on" or (chat_template == "auto" and has_chat)
        self.demo_max_tokens = demo_max_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.stop = list(stop)
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        eos = {tokenizer.eos_token_id}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos) if isinstance(gen_eos, (list, tuple)) else {gen_eos}
        self.eos_ids = {int(i) for i in eos if i is not None}
        from hardprompts.modeling import model_max_length

        self.max_length = model_max_length(model, tokenizer)
        self.trainable = lora is not None
        self.value_head: nn.Linear | None = None
        if lora is not None:
            from peft import get_peft_model

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = get_peft_model(model, lora, adapter_name=POLICY)
                model.add_adapter(ANCHOR, lora)
            model.set_adapter(POLICY)  # policy trainable, anchor frozen
            self.copy_adapter(POLICY, ANCHOR, model=model)
            d = model.config.hidden_size
            self.value_head = nn.Linear(d, 1).to(_device(model))
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        self.model = model
        self.model.eval()

    @classmethod
    def from_config(
        cls, cfg: AgentConfig, model_name: str, *, lora=None, seed: int = 0
    ) -> PromptAgent:
        """Load ``model_name`` (``policy.model``) and its tokenizer and build the agent."""
        from hardprompts.errors import ModelLoadError
        from hardprompts.modeling import load_lm, load_tokenizer, placement

        try:
            tokenizer = load_tokenizer(model_name)
            model = load_lm(model_name, "causal", dtype=cfg.agent_dtype, **placement(cfg, "agent_"))
        except ModelLoadError as exc:
            raise ModelLoadError(f"policy.model (the agent): {exc}") from None
        if lora is not None and any(p.is_meta for p in model.parameters()):
            raise ConfigError(
                "algorithm.agent_device_map offloaded some of the agent's layers to disk; their "
                "LoRA adapters need them in GPU or CPU memory: raise algorithm.agent_max_memory "
                "or add devices"
            )
        return cls(
            model,
            tokenizer,
            lora=lora,
            seed=seed,
            meta_prompt=cfg.meta_prompt,
            demo_template=cfg.demo_template,
            answer_prefix=cfg.answer_prefix,
            chat_template=cfg.chat_template,
            demo_max_tokens=cfg.demo_max_tokens,
            max_prompt_tokens=cfg.max_prompt_tokens,
            stop=cfg.stop,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
        )

    @property
    def device(self) -> torch.device:
        return _device(self.model)

    # ------------------------------------------------------------------ adapters

    def adapter_parameters(self, adapter: str, *, model=None) -> dict[str, nn.Parameter]:
        """The LoRA parameters of one adapter, keyed by their name with the adapter removed."""
        model = model if model is not None else self.model
        key = f".{adapter}."
        return {
            name.replace(key, "."): p
            for name, p in model.named_parameters()
            if "lora_" in name and key in name
        }

    @torch.no_grad()
    def copy_adapter(self, src: str, dst: str, *, model=None) -> None:
        """Exact copy of adapter ``src``'s LoRA weights into adapter ``dst``."""
        source = self.adapter_parameters(src, model=model)
        dest = self.adapter_parameters(dst, model=model)
        if source.keys() != dest.keys() or not source:
            raise RuntimeError(f"adapters {src!r} and {dst!r} do not have the same LoRA layers")
        for name, p in source.items():
            dest[name].copy_(p)

    def adapter_state(self, adapter: str) -> dict[str, Tensor]:
        """A detached copy of one adapter's LoRA weights (for checkpoints and tests)."""
        return {k: p.detach().clone() for k, p in self.adapter_parameters(adapter).items()}

    @torch.no_grad()
    def load_adapter_state(self, adapter: str, state: dict[str, Tensor]) -> None:
        params = self.adapter_parameters(adapter)
        if params.keys() != state.keys():
            raise ValueError(f"the saved {adapter!r} adapter has different LoRA layers")
        for k, p in params.items():
            p.copy_(state[k])

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The policy adapter's LoRA weights, then the value head's (what the optimizer updates)."""
        if self.value_head is None:
            raise RuntimeError("a frozen agent (no LoRA) has no trainable parameters")
        return [*self.adapter_parameters(POLICY).values(), *self.value_head.parameters()]

    @contextmanager
    def using(self, adapter: str | None) -> Iterator[None]:
        """Run the model with adapter ``adapter`` (None: the frozen base model) active."""
        if not self.trainable:
            if adapter is not None:
                raise ValueError(f"a frozen agent has no {adapter!r} adapter")
            yield
            return
        if adapter is None:
            with self.model.disable_adapter():
                yield
            return
        self.model.set_adapter(adapter)
        try:
            yield
        finally:
            self.model.set_adapter(POLICY)  # the policy stays the trainable, active adapter

    @contextmanager
    def lora_dropout_only(self) -> Iterator[None]:
        """Training mode for the policy's LoRA dropout alone (the base model's dropout stays off)."""
        drops = [m for n, m in self.model.named_modules() if n.endswith(f"lora_dropout.{POLICY}")]
        for m in drops:
            m.train()
        try:
            yield
        finally:
            for m in drops:
                m.eval()

    def base_lm(self) -> nn.Module:
        """The agent's frozen base LM, adapters off (a reference LM for prompt perplexity)."""
        return self.model if not self.trainable else _AdaptersOff(self)

    # ------------------------------------------------------------------ meta-prompt

    def query(self, demos: Sequence[tuple[str, str]]) -> Tensor:
        """Token ids [Lq] of the meta-prompt holding ``demos`` ((input, label word) pairs)."""
        shown = []
        for x, y in demos:
            ids = self.tokenizer(x.strip(), add_special_tokens=False)["input_ids"]
            if len(ids) > self.demo_max_tokens:
                x = self.tokenizer.decode(ids[: self.demo_max_tokens])
            shown.append(self.demo_template.replace("{x}", x.strip()).replace("{y}", y))
        body = self.meta_prompt.replace("{num_demos}", str(len(demos)))
        body = body.replace("{demos}", "\n\n".join(shown))
        if self.use_chat:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": body.strip()}],
                tokenize=False,
                add_generation_prompt=True,
            )
            ids = self.tokenizer(text + self.answer_prefix, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(body + self.answer_prefix)["input_ids"]
        if len(ids) + self.max_prompt_tokens > self.max_length:
            raise ConfigError(
                f"the agent's meta-prompt takes {len(ids)} tokens and the prompt up to "
                f"{self.max_prompt_tokens} more, over the agent's limit of {self.max_length}; lower "
                "algorithm.num_demos, algorithm.demo_max_tokens or algorithm.max_prompt_tokens, "
                "or shorten algorithm.meta_prompt"
            )
        return torch.tensor(ids, dtype=torch.long)

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def sample(
        self,
        queries: Sequence[Tensor],
        n: int,
        generator: torch.Generator | None = None,
        *,
        greedy: bool = False,
        adapter: str | None = POLICY,
    ) -> Rollout:
        """n prompts per meta-prompt, sampled (with ``generator``) or greedy, from ``adapter``."""
        if not self.trainable:
            adapter = None
        if not greedy and generator is None:
            raise ValueError("sampling needs a torch.Generator (reproducibility)")
        self.model.eval()
        rows: list[list[int]] = []
        texts: list[str] = []
        with self.using(adapter):
            for q in queries:
                r, t = self._generate(q, n, generator, greedy)
                rows += r
                texts += t
        width = max(len(r) for r in rows)
        response = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, r in enumerate(rows):
            response[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = True
        return Rollout(list(queries), n, response, mask, texts)

    def _generate(
        self, query: Tensor, n: int, generator: torch.Generator | None, greedy: bool
    ) -> tuple[list[list[int]], list[str]]:
        """Decode n continuations of one query with a key/value cache, each until its stop."""
        ids = query.to(self.device).unsqueeze(0).expand(n, -1)
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        rows: list[list[int]] = [[] for _ in range(n)]
        texts: list[str | None] = [None] * n  # set when a row has ended
        for t in range(self.max_prompt_tokens):
            nxt = self._choose(out.logits[:, -1], generator, greedy)  # [n] cpu
            for i in range(n):
                if texts[i] is None:
                    rows[i].append(int(nxt[i]))
                    texts[i] = self._finished(rows[i])
            if all(text is not None for text in texts) or t == self.max_prompt_tokens - 1:
                break
            out = self.model(  # ended rows run along; their tokens are not kept
                input_ids=nxt[:, None].to(self.device),
                use_cache=True,
                **{cache_keyword(self.model): output_cache(out)},
            )
        return rows, [
            t if t is not None else self._cut(r)[0] for t, r in zip(texts, rows, strict=True)
        ]

    def _choose(self, logits: Tensor, generator: torch.Generator | None, greedy: bool) -> Tensor:
        """Next token of each row: argmax, or a draw from softmax(logits / T) (top-k/p if set)."""
        return choose_next(
            logits,
            do_sample=not greedy,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            generator=generator,
        )

    def _cut(self, ids: list[int]) -> tuple[str, bool]:
        """(prompt text, whether it ended): text before the first stop string, or up to EOS."""
        ended = bool(ids) and ids[-1] in self.eos_ids
        body = ids[:-1] if ended else ids
        text = self.tokenizer.decode(body, skip_special_tokens=True).lstrip()
        cuts = [text.find(s) for s in self.stop if s in text]
        if cuts:
            return text[: min(cuts)].strip(), True
        return text.strip(), ended

    def _finished(self, ids: list[int]) -> str | None:
        text, ended = self._cut(ids)
        return text if ended else None

    # ------------------------------------------------------------------ PPO's forward

    def evaluate(
        self, rollout: Rollout, adapter: str | None = POLICY, *, values: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Log-probabilities log π(a_t | s_t) [B, T] of the sampled tokens, and values V(s_t) [B, T].

        One teacher-forced forward per query (its rows share the meta-prompt); positions after a
        row's end are 0. Gradients flow when called with grad enabled (the policy's update).
        """
        if values and (self.value_head is None or adapter != POLICY):
            raise ValueError("values come from the policy adapter of a trainable agent")
        n = rollout.per_query
        width = rollout.response.shape[1]
        logps, vals = [], []
        with self.using(adapter):
            for g, q in enumerate(rollout.queries):
                resp = rollout.response[g * n : (g + 1) * n].to(self.device)  # [n, T]
                mask = rollout.mask[g * n : (g + 1) * n].to(self.device)
                lq = q.shape[0]
                ids = torch.cat([q.to(self.device).expand(n, -1), resp], 1)  # [n, Lq + T]
                attn = torch.cat([torch.ones_like(ids[:, :lq]), mask.long()], 1)
                out = self.model(
                    input_ids=ids,
                    attention_mask=attn,
                    logits_to_keep=width + 1,  # positions Lq-1 .. Lq+T-1
                    output_hidden_states=values,
                )
                logits = out.logits[:, :-1].float() / self.temperature  # [n, T, V]
                logp = logits.log_softmax(-1).gather(-1, resp[..., None]).squeeze(-1)  # [n, T]
                logps.append(logp * mask)
                if values:
                    h = out.hidden_states[-1][:, lq - 1 : lq - 1 + width].float()  # [n, T, d]
                    vals.append(self.value_head(h).squeeze(-1) * mask)  # V(s_t), [n, T]
        return torch.cat(logps), (torch.cat(vals) if values else None)


class _AdaptersOff(nn.Module):
    """The agent's model called with its adapters disabled (the frozen base LM)."""

    def __init__(self, agent: PromptAgent) -> None:
        super().__init__()
        self.inner = agent.model
        self._agent = agent

    @property
    def config(self):  # the base model's (its BOS is the document start of a perplexity)
        return self.inner.config

    @property
    def generation_config(self):
        return getattr(self.inner, "generation_config", None)

    def forward(self, **kwargs):
        with self._agent.using(None):
            return self.inner(**kwargs)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
