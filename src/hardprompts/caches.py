"""The one folder hardprompts caches things in: fetched datasets (``data/``), served models'
answers across runs (``requests/``) and the extracted MiniLM reward model.

``$HARDPROMPTS_CACHE`` moves it; unset, it is the platform's user cache folder
(``~/.cache/hardprompts`` on Linux, as ``platformdirs`` names it).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    """``$HARDPROMPTS_CACHE``, else ``<the platform's user cache folder>/hardprompts``."""
    base = os.environ.get("HARDPROMPTS_CACHE")
    if base:
        return Path(base).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("hardprompts", appauthor=False))
