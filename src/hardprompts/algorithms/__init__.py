"""Prompt optimisers, one module each; each registers its config class with
:func:`hardprompts.config.register_algorithm` on import, and :data:`hardprompts.config.
BUILTIN_PLUGINS` names the module, so that a config imports it on first use.

- `base`: the :class:`~hardprompts.algorithms.base.Algorithm` interface and its run context
- `soft_q`: `rlprompt` (RLPrompt, Shannon soft Q-learning) and `pin` (PIN, sparse Tsallis)
- `pez`: `pez` (projected gradient over embeddings); `softprompt`: continuous prompt tuning
- `appo`: `appo` (StablePrompt, PPO with an adaptive anchor); `search`: sample-and-select
"""
