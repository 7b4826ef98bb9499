"""Attention over a shared prefix's key/value cache, read in place by many continuation rows.

Three places run many continuations after the same text: classification with a causal target
(every prompt after an input, :meth:`hardprompts.targets.hf.HFTarget._score_cached`), multiple
choice (every option after a text, :mod:`.choices`) and sampled generation (``num_samples`` rows
per text, :mod:`.generation`). Copying the text's cache into every row costs rows × context of
memory; here it is kept once, and each continuation row attends to it where it lies:

    out = softmax(q·[K_prefix, K_own]ᵀ·scale + mask)·[V_prefix, V_own]

K_prefix and V_prefix are the prefix's cache, broadcast to its rows without a copy; K_own and V_own
are the row's own tokens (of this forward, and in decoding those of earlier steps, kept in buffers
that are written in place). The function is registered with transformers' ``AttentionInterface``
and used only inside :func:`attention_implementation`, so every model family whose attention
modules call the interface works unchanged: GPT-2, Llama / Qwen (rotary positions are applied to
q and k before the call; grouped-query heads are read per key/value head), Mistral (the
``sliding_window`` argument narrows the mask; a sliding-window cache that kept only the last keys
of a left-padded prefix is read as such). Families that do not (or pass arguments this function
does not handle) are caught by the callers' self-checks, which fall back to copying the cache.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import cast

import torch
from transformers import AttentionInterface

SHARED_PREFIX_ATTENTION = "hardprompts_shared_prefix"


class SharedPrefix:
    """The prefixes' keys and values, and the rows of continuation forwards that read them.

    Args:
        keys, values: per layer, [n, H_kv, Lk, hd]: the cache of n prefixes (held, never copied).
        key_mask: [n, Lk] bool, True on real tokens (False on padding).
        key_pos: [n, Lk] the position of each key (for sliding windows).
        rows: [R] the prefix each continuation row reads, non-decreasing (rows grouped by prefix).
        capacity: own tokens kept per row across forwards (decoding: one forward per new token);
            0 = each forward attends to the prefix and to its own tokens only.

    Before each forward, :meth:`step` gives the positions and mask of the forward's tokens;
    :meth:`keep` drops rows between decoding steps.
    """

    _q: int  # tokens per row of the current forward (set by :meth:`step`)

    def __init__(
        self,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        key_mask: torch.Tensor,
        key_pos: torch.Tensor,
        rows: torch.Tensor,
        capacity: int = 0,
    ) -> None:
        self.keys, self.values = keys, values
        self.key_mask, self.key_pos = key_mask.bool(), key_pos
        self.capacity = capacity
        self.own_keys: list[torch.Tensor | None] = [None] * len(keys)  # [R0, H_kv, capacity, hd]
        self.own_values: list[torch.Tensor | None] = [None] * len(keys)
        dev = key_mask.device
        self.own_mask = torch.zeros(len(rows), capacity, dtype=torch.bool, device=dev)
        self.own_pos = torch.zeros(len(rows), capacity, dtype=torch.long, device=dev)
        self.filled = 0  # own tokens stored per row before the current forward
        self.calls = 0  # attention layers that read the prefix in the current forward
        self._set_rows(rows)

    def _set_rows(self, rows: torch.Tensor) -> None:
        """Where each row sits in a [m, g] grid of (prefix, row of that prefix), m = prefixes
        lo..hi that rows read: the prefix part of attention is one batched product over the grid."""
        self.rows = rows
        self.lo, hi = int(rows[0]), int(rows[-1])
        counts = torch.bincount(rows - self.lo, minlength=hi - self.lo + 1)  # [m]
        self.m, self.g = hi - self.lo + 1, int(counts.max())
        starts = counts.cumsum(0) - counts  # first row of each prefix
        slot = torch.arange(len(rows), device=rows.device) - starts[rows - self.lo]
        self.grid = (rows - self.lo) * self.g + slot  # [R] cell of each row
        self.regular = bool((counts == self.g).all())  # rows fill the grid in order: a plain view

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    def step(self, positions: torch.Tensor, mask: torch.Tensor) -> None:
        """Set up the next forward: its tokens' positions and mask, both [R, q]."""
        r, q = positions.shape
        if self.capacity:  # decoding: this forward's tokens follow the stored ones
            if self.calls:
                self.filled += self._q
            if self.filled + q > self.capacity:
                raise RuntimeError(f"own-token buffers of {self.capacity} tokens are full")
            self.own_mask[:r, self.filled : self.filled + q] = mask
            self.own_pos[:r, self.filled : self.filled + q] = positions
            own_mask = self.own_mask[:r, : self.filled + q]
            own_pos = self.own_pos[:r, : self.filled + q]
        else:
            own_mask, own_pos = mask.bool(), positions
        self._q, self.calls = q, 0
        t = own_mask.shape[1]
        # Which own keys each query sees: causal by position, never padding; a padding query sees
        # itself, so that no row is all -inf (its output is never read, but a NaN there would
        # reach the real rows through 0 * NaN).
        itself = (
            torch.arange(t, device=positions.device)[None, :]
            == (t - q + torch.arange(q, device=positions.device))[:, None]
        )  # [q, T]
        own = (own_mask[:, None, :] & (own_pos[:, None, :] <= positions[:, :, None])) | itself
        prefix = self.key_mask[self.rows][:, None, :].expand(r, q, -1)  # [R, q, Lk]
        self._allowed = torch.cat([prefix, own], dim=-1)[:, None, None]  # [R, 1, 1, q, Lk + T]
        self._distance = (
            positions[:, :, None] - torch.cat([self.key_pos[self.rows], own_pos], dim=1)[:, None, :]
        )  # [R, q, Lk + T]: query position - key position
        self._windowed: dict[int, torch.Tensor] = {}

    def allowed(self, sliding_window: int | None) -> torch.Tensor:
        """[R, 1, 1, q, Lk + T] keys each query may see (narrowed to the window when given)."""
        if sliding_window is None:
            return self._allowed
        if sliding_window not in self._windowed:
            near = self._distance < sliding_window
            self._windowed[sliding_window] = self._allowed & near[:, None, None]
        return self._windowed[sliding_window]

    def own(
        self, layer: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The row's own keys and values [R, H_kv, T, hd], this forward's tokens last."""
        if not self.capacity:
            return key, value
        if self.own_keys[layer] is None:
            shape = (self.own_mask.shape[0], key.shape[1], self.capacity, key.shape[-1])
            self.own_keys[layer] = key.new_empty(shape)
            self.own_values[layer] = value.new_empty(shape)
        r, end = key.shape[0], self.filled + key.shape[2]
        ok, ov = self.own_keys[layer], self.own_values[layer]
        assert ok is not None and ov is not None  # allocated above
        ok[:r, :, self.filled : end] = key  # written in place: no copy of earlier tokens
        ov[:r, :, self.filled : end] = value
        return ok[:r, :, :end], ov[:r, :, :end]

    def keep(self, sel: torch.Tensor) -> None:
        """Keep rows ``sel`` (increasing indices), in that order, for the next forwards."""
        if self.calls:
            self.filled += self._q
            self.calls = 0
        k, t = len(sel), self.filled
        for bufs in (self.own_keys, self.own_values):
            for buf in bufs:
                if buf is not None:
                    buf[:k, :, :t] = buf[sel.to(buf.device), :, :t]
        self.own_mask[:k, :t] = self.own_mask[sel, :t]
        self.own_pos[:k, :t] = self.own_pos[sel, :t]
        self._set_rows(self.rows[sel])

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Rows [R, ...] -> [m, g, ...] by prefix (empty cells are zeros)."""
        if self.regular:
            return x.view(self.m, self.g, *x.shape[1:])
        cells = self.grid.to(x.device)  # layers may sit on other devices (device_map)
        grid = x.new_zeros(self.m * self.g, *x.shape[1:]).index_copy_(0, cells, x)
        return grid.view(self.m, self.g, *x.shape[1:])

    def from_grid(self, x: torch.Tensor) -> torch.Tensor:
        """[m, g, ...] -> rows [R, ...]."""
        flat = x.reshape(self.m * self.g, *x.shape[2:])
        return flat if self.regular else flat.index_select(0, self.grid.to(x.device))

    def prefix(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [m, H_kv, Lk, hd] of the prefixes the rows read (a view)."""
        hi = self.lo + self.m
        return self.keys[layer][self.lo : hi], self.values[layer][self.lo : hi]


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [R, H, q, hd]
    key: torch.Tensor,  # [R, H_kv, q, hd]: this forward's own keys
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,  # unused: `shared_prefix` holds the masks
    scaling: float | None = None,
    dropout: float = 0.0,
    shared_prefix: SharedPrefix | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention of continuation tokens over [their prefix's keys, their own keys], exactly.

    Registered with transformers' ``AttentionInterface``; see the module docstring.
    """
    if shared_prefix is None:
        raise RuntimeError("shared-prefix attention called without a shared_prefix")
    if module.training and dropout > 0:
        raise NotImplementedError("shared-prefix attention is for eval-mode targets (no dropout)")
    for name in ("s_aux", "position_bias"):
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"shared-prefix attention does not support {name!r}")
    ctx = shared_prefix
    layer = cast(int, module.layer_idx)  # set by transformers' attention modules
    pk, pv = ctx.prefix(layer)  # [m, H_kv, Lk, hd]
    hkv, lk = pk.shape[1], pk.shape[2]
    r, h, q, hd = query.shape
    if r != ctx.num_rows:
        raise RuntimeError(f"{r} rows in the forward but {ctx.num_rows} in the shared prefix")
    k_own, v_own = ctx.own(layer, key, value)  # [R, H_kv, T, hd]
    qg = query.view(r, hkv, h // hkv, q, hd)  # heads grouped by their key/value head
    scores = torch.cat(
        [
            ctx.from_grid(torch.einsum("mgkrsd,mkld->mgkrsl", ctx.to_grid(qg), pk)),  # [R,..,Lk]
            torch.einsum("bkrsd,bktd->bkrst", qg, k_own),  # to its own tokens, [R, .., q, T]
        ],
        dim=-1,
    ) * (hd**-0.5 if scaling is None else scaling)
    softcap = kwargs.get("softcap")
    if softcap is not None:  # Gemma-2 style logit soft-capping, before the mask
        scores = torch.tanh(scores / softcap) * softcap
    allowed = ctx.allowed(kwargs.get("sliding_window"))
    scores = scores.masked_fill(~allowed.to(scores.device), float("-inf"))
    probs = scores.softmax(-1, dtype=torch.float32).to(value.dtype)
    out = ctx.from_grid(
        torch.einsum("mgkrsl,mkld->mgkrsd", ctx.to_grid(probs[..., :lk].contiguous()), pv)
    ) + torch.einsum("bkrst,bktd->bkrsd", probs[..., lk:], v_own)
    ctx.calls += 1
    return out.reshape(r, h, q, hd).transpose(1, 2).contiguous(), None  # [R, q, H, hd]


AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)


@contextmanager
def attention_implementation(model, name: str = SHARED_PREFIX_ATTENTION):
    """Run ``model`` with attention implementation ``name``, then restore every config's own."""
    configs, todo = [], [model.config]
    while todo:
        cfg = todo.pop()
        configs.append((cfg, cfg._attn_implementation))
        todo += [c for k in getattr(cfg, "sub_configs", {}) if (c := getattr(cfg, k, None))]
    for cfg, _ in configs:
        cfg._attn_implementation_internal = name
    try:
        yield
    finally:
        for cfg, old in configs:
            cfg._attn_implementation_internal = old


def cache_bytes_per_token(model) -> int:
    """Bytes of key/value cache one token holds over all layers (grouped-query heads counted)."""
    cfg = model.config
    layers = getattr(cfg, "num_hidden_layers", None) or int(getattr(cfg, "n_layer", 12))
    d = getattr(cfg, "hidden_size", None) or int(getattr(cfg, "n_embd", 768))
    heads = getattr(cfg, "num_attention_heads", None) or int(getattr(cfg, "n_head", 12))
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or d // heads
    return layers * 2 * kv_heads * head_dim * (torch.finfo(model.dtype).bits // 8)


def activation_bytes_per_token(model, length: int) -> int:
    """Bytes one token of a forward over ``length`` keys takes at the peak of a layer: the MLP's
    intermediate (4d) and q, k, v, output (4d), and its row of attention scores (heads × length),
    twice for the temporaries beside them. An estimate that the planners use alike for every path."""
    cfg = model.config
    d = getattr(cfg, "hidden_size", None) or int(getattr(cfg, "n_embd", 768))
    heads = getattr(cfg, "num_attention_heads", None) or int(getattr(cfg, "n_head", 12))
    elem = torch.finfo(model.dtype).bits // 8
    return 2 * elem * (8 * d + heads * length)


def check_calls(model, shared: SharedPrefix) -> None:
    """Every attention layer must have read the shared prefix (else the model bypassed it)."""
    if shared.calls != len(shared.keys):
        raise RuntimeError(
            f"{type(model).__name__}: {shared.calls} of {len(shared.keys)} attention layers read "
            "the shared prefix cache; this architecture cannot use the shared path"
        )
