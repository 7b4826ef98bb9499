"""The prompt-writing policy of RLPrompt and PIN: a frozen causal LM with a trainable head ψ.

Q_θ(s_t, ·) = W_LM · ψ(h_t) + b   (RLPrompt, Deng et al. 2022; docs: Methods › RLPrompt)

h_t is the frozen LM's final hidden state for the prefix s_t = (BOS, a_0, …, a_{t−1}); W_LM and
b are the frozen LM's output embedding and bias; only ψ (an MLP d → hidden → d) trains. The
optional ignorable-token filter of PIN (Choi et al. 2024; docs: Methods › PIN, fix 2) masks Q
to ``-inf`` outside the top-k of the LM's own next-token logits W_LM h_t + b.

Because h_t depends on the frozen LM only, sampling returns the hidden states and the training
code recomputes Q (online and target) from them with :meth:`PromptPolicy.q_values`, without
running the LM again (PIN's replay buffer stores exactly these).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hardprompts.errors import ConfigError
from hardprompts.functional import soft_policy, soft_value
from hardprompts.metrics import document_start_id
from hardprompts.modeling import cache_keyword, output_cache

__all__ = ["PromptPolicy", "PromptSample", "build_head", "polyak_update"]


class PromptSample(NamedTuple):
    """P prompts of T tokens, with what the loss needs to recompute Q without the LM.

    Attributes:
        tokens: [P, T] long, the prompt tokens a_0 … a_{T−1} (no BOS).
        hidden: [P, T, d] float32, h_t: the frozen LM's final hidden state at state s_t.
        q: [P, T, V] float32, Q_θ(s_t, ·) as sampled from, filter applied (detached).
        filter_mask: [P, T, V] bool, True = token allowed by the filter; None without a filter.
    """

    tokens: Tensor
    hidden: Tensor
    q: Tensor
    filter_mask: Tensor | None


def build_head(d: int, hidden_size: int = 2048, *, residual: bool = True) -> nn.Module:
    """The trainable head ψ: Linear(d, hidden) → ReLU → Linear(hidden, d), optionally residual.

    Initialisation ("near zero"):

    - ``residual=True`` (default, ours): ψ(h) = h + MLP(h). The first layer has PyTorch's default
      init; the last layer has Xavier-uniform weights with gain 1e-4 and zero bias, so
      |MLP(h)| ≈ 1e-4 · |h| and initially W_LM ψ(h) + b ≈ the LM's own logits: exploration starts
      from the LM's fluent distribution. :class:`PromptPolicy` then subtracts the soft value of
      the LM's logits at the state, so that V_θ starts at 0.
    - ``residual=False`` (RLPrompt's released code): ψ(h) = MLP(h), both layers Xavier-uniform
      with gain 1e-4 and bias −1e-4, so ψ(h) ≈ 0 and initially Q ≈ b (0 for GPT-2): a nearly
      uniform policy.
    """
    return _Head(d, hidden_size, residual=residual)


class _Head(nn.Module):
    def __init__(self, d: int, hidden_size: int, *, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.mlp = nn.Sequential(nn.Linear(d, hidden_size), nn.ReLU(), nn.Linear(hidden_size, d))
        first, last = self.mlp[0], self.mlp[2]
        nn.init.xavier_uniform_(last.weight, gain=1e-4)
        if residual:
            nn.init.zeros_(last.bias)
        else:  # RLPrompt: every Linear xavier_uniform_(gain=1e-4), bias −1e-4
            nn.init.xavier_uniform_(first.weight, gain=1e-4)
            nn.init.constant_(first.bias, -1e-4)
            nn.init.constant_(last.bias, -1e-4)

    def forward(self, h: Tensor) -> Tensor:  # [..., d] → [..., d]
        out = self.mlp(h)
        return h + out if self.residual else out  # ψ(h) = h + MLP(h)  |  MLP(h)


@torch.no_grad()
def polyak_update(
    target_params: Iterable[Tensor], online_params: Iterable[Tensor], tau: float
) -> None:
    """In place θ′ ← (1 − τ) θ′ + τ θ for matching parameter lists (RLPrompt: τ = 0.001)."""
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau!r}")
    target_params, online_params = list(target_params), list(online_params)
    if len(target_params) != len(online_params):
        raise ValueError(
            f"{len(target_params)} target parameters but {len(online_params)} online parameters"
        )
    for tgt, src in zip(target_params, online_params, strict=True):
        tgt.mul_(1.0 - tau).add_(src, alpha=tau)  # θ′ ← (1 − τ)θ′ + τθ


class PromptPolicy(nn.Module):
    """Frozen causal LM + trainable head ψ = Q-network of RLPrompt (Deng et al., 2022) and PIN.

    The LM and tokenizer are loaded by the caller (any ``AutoModelForCausalLM``); the LM is put in
    eval mode with ``requires_grad=False`` and stays in eval mode under ``.train()``. A target
    head ψ′ (a copy of ψ, no gradients) shares the same frozen LM; :meth:`update_target` moves it
    by Polyak averaging. Save and load ψ and ψ′ with :meth:`head_state_dict` and
    :meth:`load_head_state_dict` (``state_dict()`` also holds the LM).

    The initial state s_0 is the single token ``bos_token_id``: unless given, the document-start
    token of :func:`hardprompts.metrics.document_start_id` (the tokenizer's BOS, else the model's
    configured BOS, else EOS; GPT-2 uses ``<|endoftext|>`` for both).

    Q is computed in float32 whatever the LM's dtype. The LM's output layer must be linear
    (``get_output_embeddings()`` returns an ``nn.Linear``); logit soft-capping or scaling in a
    model's forward is not reproduced.

    Args:
        lm: the frozen causal LM.
        tokenizer: its tokenizer.
        hidden_size: width of ψ's hidden layer (RLPrompt and PIN: 2048).
        residual: ψ(h) = h + MLP(h) and Q(s, ·) = W_LM ψ(h) + b − V_LM(s), V_LM the soft value
            of the LM's own logits W_LM h + b, so that Q starts at the LM's logits shifted to
            V = 0 (default, ours); False: RLPrompt's ψ(h) = MLP(h) ≈ 0 and no offset. See
            :func:`build_head`.
        bos_token_id: first input token; default the document-start token.
        entropy, alpha: the regulariser and temperature whose soft value the residual head's
            offset uses (the algorithm's own), so that V_θ = 0 at the start.
    """

    def __init__(
        self,
        lm: nn.Module,
        tokenizer,
        *,
        hidden_size: int = 2048,
        residual: bool = True,
        bos_token_id: int | None = None,
        entropy: str = "shannon",
        alpha: float = 1.0,
    ) -> None:
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        lm.eval()
        lm.requires_grad_(False)
        out = lm.get_output_embeddings()
        if not isinstance(out, nn.Linear):
            raise TypeError(
                f"the LM's output embedding must be an nn.Linear, got {type(out).__name__}"
            )
        if out.weight.is_meta:
            raise ConfigError(
                "policy.device_map offloaded the LM's output layer to disk; the policy's head "
                "reads it on every step: raise policy.max_memory"
            )
        d = out.in_features
        if bos_token_id is None:
            bos_token_id = document_start_id(tokenizer, lm)
        self.bos_token_id = int(bos_token_id)
        device = out.weight.device
        # The action space: real vocabulary entries that are not special tokens. Output rows past
        # the tokenizer (padded vocabularies such as OPT's) and BOS/EOS/PAD never enter a prompt.
        allowed = torch.zeros(out.out_features, dtype=torch.bool)
        allowed[: min(len(tokenizer), out.out_features)] = True
        allowed[[i for i in tokenizer.all_special_ids if i < out.out_features]] = False
        self.register_buffer("allowed_tokens", allowed.to(device), persistent=False)
        self.residual = residual
        self.entropy, self.alpha = entropy, alpha  # of the residual head's value offset
        self.head = build_head(d, hidden_size, residual=residual).to(device)
        self.target_head = copy.deepcopy(self.head).requires_grad_(False)

    # -- bookkeeping -------------------------------------------------------------------------

    @property
    def _out(self) -> nn.Linear:
        return self.lm.get_output_embeddings()

    @property
    def hidden_dim(self) -> int:
        """d, the LM's final hidden size (the input and output size of ψ)."""
        return self._out.in_features

    @property
    def vocab_size(self) -> int:
        """V, the number of rows of the LM's output embedding (the width of Q)."""
        return self._out.out_features

    @property
    def device(self) -> torch.device:
        return self._out.weight.device

    def trainable_parameters(self) -> list[nn.Parameter]:
        """ψ's parameters, the only ones that train."""
        return list(self.head.parameters())

    def train(self, mode: bool = True) -> PromptPolicy:
        super().train(mode)
        self.lm.eval()  # the frozen LM never runs dropout
        return self

    @torch.no_grad()
    def update_target(self, tau: float = 0.001) -> None:
        """ψ′ ← (1 − τ) ψ′ + τ ψ (RLPrompt and PIN: τ = 0.001 each step)."""
        polyak_update(self.target_head.parameters(), self.head.parameters(), tau)

    def head_state_dict(self) -> dict[str, dict[str, Tensor]]:
        """{"head": ψ, "target_head": ψ′} state dicts: what a checkpoint needs (the LM is frozen)."""
        return {"head": self.head.state_dict(), "target_head": self.target_head.state_dict()}

    def load_head_state_dict(self, state: dict[str, dict[str, Tensor]]) -> None:
        self.head.load_state_dict(state["head"])
        self.target_head.load_state_dict(state["target_head"])

    # -- Q from hidden states ----------------------------------------------------------------

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """The frozen LM's own next-token logits W_LM h + b, [..., d] → [..., V] float32."""
        w = self._out.weight.float()
        b = None if self._out.bias is None else self._out.bias.float()
        return F.linear(hidden.float(), w, b)

    def token_filter(self, hidden: Tensor, k: int) -> Tensor:
        """PIN's ignorable-token filter: True for the top-k tokens of W_LM h + b, [..., V] bool.

        Exactly k tokens per state (ties broken by ``torch.topk``); every allowed token when k is
        at least their number (no sort then: PIN's k = 10,000 covers a small vocabulary).
        """
        if not 1 <= k <= self.vocab_size:
            raise ValueError(f"token_filter_k must be in [1, {self.vocab_size}], got {k!r}")
        if k >= int(self.allowed_tokens.sum()):
            return self.allowed_tokens.expand(*hidden.shape[:-1], -1).clone()
        with torch.no_grad():
            logits = self.lm_logits(hidden).masked_fill(~self.allowed_tokens, float("-inf"))
            top = logits.topk(k, dim=-1, sorted=False).indices
            return torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, top, True)

    def q_values(
        self,
        hidden: Tensor,
        filter_mask: Tensor | None = None,
        *,
        token_filter_k: int | None = None,
        target: bool = False,
    ) -> Tensor:
        """Q(s_t, ·) = W_LM ψ(h_t) + b from stored hidden states, [..., d] → [..., V] float32.

        Args:
            hidden: [..., d] frozen-LM hidden states h_t.
            filter_mask: [..., V] bool, True = allowed; others get Q = −inf.
            token_filter_k: compute the filter from ``hidden`` instead (top-k of the LM's
                logits, :meth:`token_filter`); exclusive with ``filter_mask``.
            target: use the target head ψ′ (no gradients) instead of ψ.
        """
        if filter_mask is not None and token_filter_k is not None:
            raise ValueError("pass filter_mask or token_filter_k, not both")
        if token_filter_k is not None:
            filter_mask = self.token_filter(hidden, token_filter_k)
        hidden = hidden.float()
        if target:
            with torch.no_grad():
                psi = self.target_head(hidden)
        else:
            psi = self.head(hidden)
        q = self.lm_logits(psi)  # Q_θ(s_t, ·) = W_LM · ψ(h_t) + b
        q = q.masked_fill(~self.allowed_tokens, float("-inf"))  # special tokens are not actions
        if filter_mask is not None:
            q = q.masked_fill(~filter_mask, float("-inf"))  # filtered tokens: Q = −inf
        if self.residual:
            # − V_LM(s_t), the soft value of the frozen LM's own (masked) logits: a constant at
            # s_t, so the policy is unchanged, and V_θ(s_t) starts at 0, the scale of the
            # z-scored reward (raw logits, ~10, make every bootstrapped target r − V′ ≪ 0).
            own = self.lm_logits(hidden).masked_fill(~self.allowed_tokens, float("-inf"))
            if filter_mask is not None:
                own = own.masked_fill(~filter_mask, float("-inf"))
            q = q - soft_value(own, self.alpha, self.entropy).unsqueeze(-1)
        return q

    # -- running the frozen LM ---------------------------------------------------------------

    def _lm_hidden(self, input_ids: Tensor, past_key_values=None) -> tuple[Tensor, object]:
        """Final hidden states [P, L, d] (the input of the output layer) and the updated cache."""
        past_len = 0 if past_key_values is None else past_key_values.get_seq_length()
        # No padding anywhere: an explicit all-ones mask (BOS may share the pad id, as in GPT-2).
        mask = torch.ones(
            input_ids.shape[0],
            past_len + input_ids.shape[1],
            dtype=torch.long,
            device=input_ids.device,
        )
        base = self.lm.base_model
        cache = {cache_keyword(base): past_key_values} if past_key_values is not None else {}
        out = base(input_ids=input_ids, attention_mask=mask, use_cache=True, **cache)
        return out.last_hidden_state, output_cache(out)

    @torch.no_grad()
    def hidden_for(self, tokens: Tensor) -> Tensor:
        """h_t for every state of given prompts, in one uncached forward of (BOS, a_0 … a_{T−2}).

        Args:
            tokens: [P, T] long prompt tokens.

        Returns:
            [P, T, d] float32; row t is the hidden state at s_t = (BOS, a_0, …, a_{t−1}).
        """
        P = tokens.shape[0]
        bos = torch.full((P, 1), self.bos_token_id, dtype=torch.long, device=tokens.device)
        inputs = torch.cat([bos, tokens[:, :-1]], dim=1)
        inputs = inputs.to(self.device)
        out = self.lm.base_model(
            input_ids=inputs, attention_mask=torch.ones_like(inputs), use_cache=False
        )
        return out.last_hidden_state.float()

    @torch.no_grad()
    def sample(
        self,
        num_prompts: int,
        length: int,
        *,
        entropy: str = "shannon",
        alpha: float = 1.0,
        top_k: int | None = None,
        greedy: bool = False,
        token_filter_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> PromptSample:
        """Write ``num_prompts`` prompts of ``length`` tokens in one batched, cached loop.

        One forward of the frozen LM per step over all prompts, reusing its key/value cache.
        Tokens are drawn from π = softmax(Q/α) (Shannon) or sparsemax(Q/α) (Tsallis), restricted
        to the ``top_k`` most probable tokens and renormalised when ``top_k`` is set (RLPrompt
        trains with k = 256), or the argmax of Q when ``greedy`` (evaluation). Runs without
        gradients; recompute Q for the loss with :meth:`q_values` on ``hidden``.

        Args:
            num_prompts: P.
            length: T, tokens per prompt.
            entropy: ``"shannon"`` or ``"tsallis"``, the policy's regulariser.
            alpha: temperature α.
            top_k: sample among the k most probable tokens only.
            greedy: take argmax Q (ignores ``top_k``, ``alpha``, ``generator``).
            token_filter_k: PIN's filter: mask Q outside the LM's own top-k tokens.
            generator: torch.Generator on the LM's device, for reproducible sampling.
        """
        if num_prompts < 1 or length < 1:
            raise ValueError(f"num_prompts and length must be ≥ 1, got {num_prompts}, {length}")
        if top_k is not None and not 1 <= top_k:
            raise ValueError(f"top_k must be ≥ 1, got {top_k!r}")
        inputs = torch.full(
            (num_prompts, 1), self.bos_token_id, dtype=torch.long, device=self.device
        )
        past = None
        tokens, hiddens, qs, masks = [], [], [], []
        for _ in range(length):
            h, past = self._lm_hidden(inputs, past)  # one step for all P prompts
            h = h[:, -1].float()  # h_t, [P, d]
            mask = None if token_filter_k is None else self.token_filter(h, token_filter_k)
            q = self.q_values(h, mask)  # [P, V]
            if greedy:
                a = q.argmax(dim=-1)
            else:
                probs = soft_policy(q, alpha, entropy)  # π(·|s_t)
                if top_k is not None and top_k < probs.shape[-1]:
                    kth = probs.topk(top_k, dim=-1).indices
                    keep = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, kth, True)
                    probs = probs.masked_fill(~keep, 0.0)
                a = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            tokens.append(a)
            hiddens.append(h)
            qs.append(q)
            masks.append(mask)
            inputs = a[:, None]
        return PromptSample(
            tokens=torch.stack(tokens, dim=1),
            hidden=torch.stack(hiddens, dim=1),
            q=torch.stack(qs, dim=1),
            filter_mask=None if token_filter_k is None else torch.stack(masks, dim=1),
        )

    # -- text --------------------------------------------------------------------------------

    def decode(self, tokens: Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Prompt strings, ``tokenizer.decode`` of each row, verbatim.

        With GPT-2-style byte-level BPE a token that starts a word carries its space ("Ġgreat"
        decodes to " great"), so a prompt usually starts with a space. It is kept (no strip, no
        clean-up of spaces), so re-tokenising the string gives back the same tokens; a template
        that inserts its own space before the prompt should strip it.
        """
        rows = tokens.tolist() if isinstance(tokens, Tensor) else [list(r) for r in tokens]
        return [
            self.tokenizer.decode(
                row, skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            for row in rows
        ]

    def token_strings(self, tokens: Tensor | Sequence[Sequence[int]]) -> list[list[str]]:
        """The vocabulary strings of each prompt's tokens (e.g. ``["ĠThis", "Ġlanguage"]``)."""
        rows = tokens.tolist() if isinstance(tokens, Tensor) else [list(r) for r in tokens]
        return [self.tokenizer.convert_ids_to_tokens(row) for row in rows]
