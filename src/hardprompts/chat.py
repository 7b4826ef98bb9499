"""Chat formatting (``task.chat``): the filled template as the user turn of the target's chat template.

An instruction-tuned target (Llama-3-Instruct, Qwen-Instruct) is trained on conversations. With
``task.chat`` on, an in-process target reads what a chat server would give it: the target
tokenizer's chat template applied to one user message (the filled task template) with the
generation prompt, so that the label word, the option or the generated answer comes right after
the assistant turn's start. ``kind: openai-chat`` is the served equivalent (the server applies
the same chat template); in-process and served scores of one model then agree.

How: the chat template is rendered once around a sentinel, which splits it into the text before
the user's message (``prefix``) and the text after it up to and with the assistant turn's start
(``suffix``). Wrapping a text or a template is then string concatenation, so truncation,
key/value-cache sharing and batching work unchanged. Details:

* a BOS that the chat template writes is dropped from ``prefix`` when the tokenizer adds its BOS
  itself (Llama-3: one ``<|begin_of_text|>``, as a server that tokenises the rendered chat
  without adding special tokens gets);
* a chat template that trims the message (Llama-3's ``| trim``) gets the template stripped;
* label words (classification) are scored without their leading space: the answer starts a new
  turn (``openai-chat`` compares label words without surrounding spaces too);
* multiple choice: ``task.choice_prefix`` defaults to nothing in chat mode (the option follows
  the assistant turn's start).

``task.chat: auto`` turns it on when the tokenizer has a chat template and the target's name says
it is an instruction or chat model (``instruct``, ``chat``, ``-it``). The default is false: the
papers (StablePrompt with Llama-3-8B-Instruct) feed the raw template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from hardprompts.errors import ConfigError

__all__ = ["ChatFormat", "chat_format", "resolve_chat", "says_chat_model"]

ChatSetting = bool | Literal["auto"]
_SENTINEL = "HARDPROMPTSUSERTURN"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CHAT_NAMES = ("instruct", "chat", "-it", "_it")


@dataclass(frozen=True)
class ChatFormat:
    """The chat template around one user message (see the module docstring)."""

    prefix: str  # before the user's message (a BOS the tokenizer adds itself dropped)
    suffix: str  # after it, up to and with the assistant turn's start
    trims: bool  # the chat template strips the message

    def wrap(self, text: str) -> str:
        """A filled text as the chat-formatted text the target continues."""
        return self.prefix + (text.strip() if self.trims else text) + self.suffix

    def wrap_template(self, template: str) -> str:
        """A task template whose rendering is :meth:`wrap` of the plain template's rendering.

        A causal template may end with ``{mask}`` (the predicted token follows the text): the
        suffix goes before it, so the label word follows the assistant turn's start.
        """
        body = template.strip() if self.trims else template
        if body.rstrip().endswith("{mask}"):
            body = body.rstrip()[: -len("{mask}")]
            body = body.rstrip() if self.trims else body
        return self.prefix + body + self.suffix

    def extra_text(self) -> str:
        """What wrapping adds (to count its tokens when fitting an input)."""
        return self.prefix + self.suffix


def says_chat_model(name: str) -> bool:
    """True when a model name says it is an instruction or chat model (``task.chat: auto``)."""
    low = name.lower().rstrip("/")
    return any(word in low for word in _CHAT_NAMES)


def chat_format(tokenizer: Any) -> ChatFormat:
    """The :class:`ChatFormat` of a tokenizer's chat template, or a ConfigError naming task.chat."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "task.chat is true but the target's tokenizer has no chat template; set task.chat: "
            "false, or give a tokenizer with one (tokenizer_config.json 'chat_template')"
        )

    def render(content: str) -> str:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )

    full = render(_SENTINEL)
    if full.count(_SENTINEL) != 1:
        raise ConfigError(
            "task.chat: the target's chat template does not show the user's message once; set "
            "task.chat: false"
        )
    prefix, suffix = full.split(_SENTINEL)
    trims = f" {_SENTINEL} " not in render(f" {_SENTINEL} ")
    bos = getattr(tokenizer, "bos_token", None)
    if bos and prefix.startswith(bos):
        from hardprompts.templates import special_tokens_around

        lead, _ = special_tokens_around(tokenizer)
        if lead and lead[0] == tokenizer.bos_token_id:
            prefix = prefix[len(bos) :]  # the target adds its BOS itself
    for part in (prefix, suffix):
        found = _PLACEHOLDER.search(part)
        if found:
            raise ConfigError(
                f"task.chat: the chat template writes {found.group(0)!r}, which reads as a "
                "template placeholder; set task.chat: false and write the chat format into "
                "task.template"
            )
    return ChatFormat(prefix, suffix, trims)


def resolve_chat(setting: ChatSetting, target_config: Any, kind: str) -> ChatFormat | None:
    """The chat format a task applies in-process, or None (see the module docstring).

    ``kind`` is the resolved target kind: masked and served kinds never format in-process (a
    served chat model takes ``target.kind: openai-chat``; ``task.chat: true`` there is an error).
    """
    if setting is False:
        return None
    if kind == "masked":
        if setting is True:
            raise ConfigError(
                "task.chat is true but target.model is a masked LM, which has no chat turns; set "
                "task.chat: false (or use a causal instruction-tuned target)"
            )
        return None
    if kind in ("openai", "openai-chat"):
        if setting is True:
            raise ConfigError(
                f"task.chat formats the text of in-process targets; with target.kind {kind} use "
                "kind openai-chat (the server applies its chat template) and task.chat: false"
            )
        return None
    from hardprompts.modeling import load_tokenizer

    tokenizer = load_tokenizer(
        target_config.model, trust_remote_code=getattr(target_config, "trust_remote_code", False)
    )
    if setting == "auto":
        names = (str(target_config.model), str(getattr(tokenizer, "name_or_path", "")))
        if not getattr(tokenizer, "chat_template", None) or not any(map(says_chat_model, names)):
            return None
    return chat_format(tokenizer)
