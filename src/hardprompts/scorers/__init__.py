"""Reward models for text style transfer: content preservation, target style, fluency, BLEU.

Each scorer is built from a config string and called on batches of texts (see
``build_content_scorer``, ``build_style_scorer``, ``build_fluency_scorer``); all return CPU
float32 tensors with one value per text. The package imports nothing above ``modeling``.
"""

from hardprompts.scorers.bleu import bleu, corpus_bleu, self_bleu
from hardprompts.scorers.content import (
    BertScoreContent,
    ContentScorer,
    EmbeddingCosineContent,
    build_content_scorer,
)
from hardprompts.scorers.fluency import (
    DEFAULT_FLUENCY_MODEL,
    ClassifierFluency,
    FluencyScorer,
    PerplexityFluency,
    build_fluency_scorer,
)
from hardprompts.scorers.minilm import minilm_path
from hardprompts.scorers.style import StyleScorer, build_style_scorer, load_sequence_classifier

__all__ = [
    "DEFAULT_FLUENCY_MODEL",
    "BertScoreContent",
    "ClassifierFluency",
    "ContentScorer",
    "EmbeddingCosineContent",
    "FluencyScorer",
    "PerplexityFluency",
    "StyleScorer",
    "bleu",
    "build_content_scorer",
    "build_fluency_scorer",
    "build_style_scorer",
    "corpus_bleu",
    "load_sequence_classifier",
    "minilm_path",
    "self_bleu",
]
