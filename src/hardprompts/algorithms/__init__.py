"""Prompt optimisers. Each module registers its config class with `register_algorithm` on import.

- `soft_q`: `rlprompt` (RLPrompt, Shannon soft Q-learning) and `pin` (PIN, sparse Tsallis)
- `pez`: `pez` (projected gradient over embeddings); `softprompt`: continuous prompt tuning
- `appo`: `appo` (StablePrompt, PPO with an adaptive anchor); `search`: sample-and-select
"""

from hardprompts.algorithms import appo, pez, search, soft_q, softprompt  # noqa: F401
