"""Loading Hugging Face models and tokenizers by name, local path or built-in name.

Every model goes through ``from_pretrained`` exactly as users call it, so ``HF_HUB_OFFLINE``,
the cache and local folders behave as in ``transformers``. ``builtin:<name>`` resolves to a model
folder shipped inside the package (see ``hardprompts/builtin``). ``trust_remote_code`` is passed
through and defaults to off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from hardprompts.errors import ConfigError, ModelLoadError

BUILTIN_DIR = Path(__file__).parent / "builtin"
BUILTIN_PREFIX = "builtin:"


def builtin_models() -> list[str]:
    """Names of the models shipped with the package (``builtin:<name>``)."""
    if not BUILTIN_DIR.is_dir():
        return []
    return sorted(p.name for p in BUILTIN_DIR.iterdir() if (p / "config.json").is_file())


#: Seconds the one reachability check of the hub (:func:`hub_unreachable`) waits.
HUB_PROBE_SECONDS = 3.0
_hub: dict[str, str | None] = {}  # "reason": why the hub is unreachable (None: reachable)


def _probe_hub(endpoint: str) -> str | None:
    """One HEAD request to the hub (through the environment's proxies, like huggingface_hub);
    any HTTP answer, an error status included, means reachable. Returns why not, or None."""
    import urllib.error
    import urllib.request

    try:
        request = urllib.request.Request(endpoint, method="HEAD")
        with urllib.request.urlopen(request, timeout=HUB_PROBE_SECONDS):
            pass
    except urllib.error.HTTPError:
        return None  # the hub answered
    except (OSError, ValueError) as exc:  # URLError, a timeout, a refused or unroutable address
        reason = getattr(exc, "reason", None) or exc
        return f"{endpoint}: {reason}"
    return None


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached from here, or None (reachable, or offline
    mode already on).

    Asked once per process, before the first model that is neither ``builtin:`` nor a local
    folder: without it, an unreachable hub costs five retries (27-97 s) per file before the
    error. When the hub does not answer, offline mode is switched on for this process
    (``HF_HUB_OFFLINE``: models already in the cache still load; others fail at once, with
    the hint of :func:`_load_error`)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE and "reason" not in _hub:
        return None
    if "reason" not in _hub:
        _hub["reason"] = _probe_hub(constants.ENDPOINT)
        if _hub["reason"] is not None:
            constants.HF_HUB_OFFLINE = True
    return _hub["reason"]


def resolve_model_path(name: str, *, probe_hub: bool = True) -> str:
    """A ``builtin:`` name becomes its folder; other names and paths pass through unchanged.

    A hub name (not built-in, not an existing folder) first checks, once, that the hub answers
    (:func:`hub_unreachable`; ``probe_hub=False`` skips that, for cache-only reads)."""
    if not name.startswith(BUILTIN_PREFIX):
        if probe_hub and not Path(name).exists():
            hub_unreachable()
        return name
    short = name.removeprefix(BUILTIN_PREFIX)
    path = BUILTIN_DIR / short
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"no built-in model {short!r}; built-in models: {', '.join(builtin_models()) or '(none)'}"
        )
    return str(path)


def _load_error(name: str, what: str, exc: Exception) -> ModelLoadError:
    local = Path(name).exists()
    builtins = ", ".join(BUILTIN_PREFIX + m for m in builtin_models()) or "none shipped"
    unreachable = _hub.get("reason")
    if unreachable is not None and not local:
        return ModelLoadError(
            f"could not load the {what} {name!r}: it is not a local folder or in the cache, and "
            f"the Hugging Face hub is unreachable from here ({unreachable}), so it was not "
            "downloaded. Work offline with HF_HUB_OFFLINE=1 (models already in the cache load), "
            f"pass a local folder saved with save_pretrained, a built-in model ({builtins}), or "
            "check the name"
        )
    hint = (
        "the folder exists but does not hold a complete Hugging Face model (config.json, weights, "
        "tokenizer files)"
        if local
        else "it is not a local folder, and the Hugging Face hub could not provide it (no network, "
        "HF_HUB_OFFLINE=1, or a misspelt name). Pass a local folder saved with save_pretrained, a "
        f"built-in model ({', '.join(BUILTIN_PREFIX + m for m in builtin_models()) or 'none shipped'}), "
        "or download the model where there is network and point the config at the folder"
    )
    return ModelLoadError(
        f"could not load the {what} {name!r}: {hint}.\n  cause: {type(exc).__name__}: {exc}"
    )


def load_tokenizer(name: str, *, trust_remote_code: bool = False):
    """``AutoTokenizer.from_pretrained`` with a clear error; gives a pad token when there is none."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # OSError, ValueError, EnvironmentError... all mean "cannot load"
        raise _load_error(name, "tokenizer of", exc) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def detect_kind(name: str, *, trust_remote_code: bool = False) -> Literal["masked", "causal"]:
    """Read the model's config and say whether it is a masked or a causal LM."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    path = resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise _load_error(name, "model", exc) from None
    for arch in config.architectures or []:
        if arch.endswith("ForMaskedLM"):
            return "masked"
        if arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel"):
            return "causal"
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(
        config, "is_decoder", False
    ):
        if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            return "masked"
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    raise ModelLoadError(
        f"cannot tell whether {name!r} (model_type {config.model_type!r}) is a masked or a causal LM; "
        "set target.kind to masked or causal"
    )


def pick_device(device: str, field: str = "device") -> torch.device:
    """``auto`` is cuda when available, else cpu; anything else goes to ``torch.device``.

    A device this machine does not have (``cuda`` without CUDA, ``mps`` off Apple silicon) is a
    :class:`ConfigError` naming ``field``, raised before any weights are read.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(
            f"{field} {device!r} is not a torch device ({exc}); use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no GPU found"
            raise ConfigError(f"{field} is {device!r} but {why}; set it to auto or cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{field} is {device!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"{field} is {device!r} but MPS (Apple silicon) is not available; set it to auto or cpu"
        )
    return dev


def check_devices(config) -> None:
    """Check every ``device`` / ``*_device`` field of a config (any pydantic model) up front."""
    from pydantic import BaseModel

    def walk(model: BaseModel, prefix: str) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                walk(value, f"{prefix}{name}.")
            elif (name == "device" or name.endswith("_device")) and isinstance(value, str):
                pick_device(value, f"{prefix}{name}")

    walk(config, "")


def declared_kind(name: str, *, trust_remote_code: bool = False) -> tuple[str, str] | None:
    """(masked or causal, architecture) when the model's config names such an architecture.

    None when it names neither or cannot be read (loading the model then says why).
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            resolve_model_path(name), trust_remote_code=trust_remote_code
        )
    except Exception:
        return None
    for arch in config.architectures or []:
        if arch.endswith("ForMaskedLM"):
            return "masked", arch
        if arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel"):
            return "causal", arch
    return None


def placement(section: Any, prefix: str = "") -> dict[str, Any]:
    """``device``, ``device_map`` and ``max_memory`` of a config section, for :func:`load_lm`.

    ``prefix`` names prefixed fields, e.g. ``"agent_"`` for ``agent_device``, ...
    """
    return {
        "device": getattr(section, f"{prefix}device"),
        "device_map": getattr(section, f"{prefix}device_map", None),
        "max_memory": getattr(section, f"{prefix}max_memory", None),
    }


def _max_memory(max_memory: dict | None) -> dict | None:
    """GPU indices as ints (YAML and JSON give '0'), as accelerate expects."""
    if max_memory is None:
        return None
    return {int(k) if str(k).isdigit() else k: v for k, v in max_memory.items()}


def load_lm(
    name: str,
    kind: Literal["masked", "causal"],
    *,
    device: str = "auto",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
):
    """Load a frozen (eval mode, no grad) masked or causal LM.

    With ``device_map`` the model is loaded through accelerate's big-model path
    (``from_pretrained(device_map=..., max_memory=...)``): its layers are spread over the devices
    and accelerate's hooks move activations between them; ``device`` is then not used. The
    model's inputs go to the device of its first parameters (the embeddings), as without.
    """
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    cls = AutoModelForMaskedLM if kind == "masked" else AutoModelForCausalLM
    path = resolve_model_path(name)
    torch_device = pick_device(device) if device_map is None else None
    declared = declared_kind(name, trust_remote_code=trust_remote_code)
    if declared is not None and declared[0] != kind:
        raise ConfigError(
            f"{name!r} is a {declared[0]} LM ({declared[1]}), but a {kind} LM is needed here "
            "(the RL policy's and the perplexity judge's LMs are causal); choose a "
            f"{kind} model"
        )
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype), "trust_remote_code": trust_remote_code}
    if device_map is not None:
        kwargs.update(device_map=device_map, max_memory=_max_memory(max_memory))
    try:
        model = cls.from_pretrained(path, **kwargs)
    except Exception as exc:
        if device_map is not None and Path(path).exists():
            raise ModelLoadError(
                f"could not place the {kind} LM {name!r} with device_map={device_map!r}, "
                f"max_memory={max_memory!r}: raise max_memory or add devices.\n"
                f"  cause: {type(exc).__name__}: {exc}"
            ) from None
        raise _load_error(name, f"{kind} LM", exc) from None
    if torch_device is not None:
        model.to(torch_device)
    model.eval()
    model.requires_grad_(False)
    return model


# Model families whose position ids start after the padding index (RoBERTa's offset of pad_id + 1).
_OFFSET_POSITIONS = {
    "roberta",
    "xlm-roberta",
    "xlm-roberta-xl",
    "camembert",
    "longformer",
    "data2vec-text",
}


def model_max_length(model, tokenizer) -> int:
    """The longest token sequence the model accepts (tokenizer limit and position table)."""
    limits = []
    tml = getattr(tokenizer, "model_max_length", None)
    if tml and tml < 1_000_000:
        limits.append(int(tml))
    cfg = model.config
    n = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
    if n:
        if cfg.model_type in _OFFSET_POSITIONS:
            n -= (cfg.pad_token_id or 0) + 1
        limits.append(int(n))
    if not limits:
        raise ValueError("cannot find the model's maximum length; set target.max_length")
    return min(limits)


def cache_keyword(model) -> str:
    """Name of the key/value-cache argument of ``model``'s forward: ``cache`` in transformers
    versions that renamed it (``past_key_values`` is deprecated there and warns at every call),
    else ``past_key_values``. A peft model is asked about the model it wraps."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def output_cache(out):
    """The key/value cache a forward returned, under either name (see :func:`cache_keyword`)."""
    return out["cache"] if "cache" in out else out.past_key_values


def choose_next(
    logits: torch.Tensor,
    *,
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token of each row. logits [R, V] -> ids [R] (CPU).

    Greedy: argmax (the first of tied tokens). Sampling: a draw from softmax(logits /
    temperature) restricted to the ``top_k`` best tokens (all when None or 0) and then to the
    smallest set whose probability reaches ``top_p`` (nucleus; the token that crosses it is kept),
    with the CPU ``generator``.

    Memory: beside the caller's ``logits``, one [R, V] copy is scaled and masked in place, and
    only the probabilities (and the draw's own buffer) remain when drawing: three [R, V] tensors
    at most (the same values, hence the same draws, as out-of-place operations).
    """
    logits = logits.float().cpu()  # [R, V]; the CPU generator draws on the CPU
    if not do_sample:
        return logits.argmax(-1)
    if temperature <= 0:
        raise ValueError("sampling needs temperature > 0 (use do_sample=False for greedy)")
    logits = logits / temperature  # our own copy from here on: masked in place
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits.masked_fill_(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # keep the token crossing top_p
        del probs
        logits.scatter_(-1, order, sorted_logits.masked_fill_(drop, float("-inf")))
        del sorted_logits, order, drop
    probs = logits.softmax(-1)
    del logits  # only the probabilities are drawn from
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
