"""hardprompts: discrete prompt optimisation for frozen language models."""

__version__ = "0.1.0"
