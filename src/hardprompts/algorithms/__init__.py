"""Prompt optimisers. Each module registers its config class with `register_algorithm`."""
