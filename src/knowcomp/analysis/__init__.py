"""Analyses of a compressed model against the uncompressed one: layer-wise similarity of
hidden activations and attention maps (Hoang et al., 2024, Fig. 5)."""

from knowcomp.analysis.similarity import (
    LayerSimilarity,
    ReferenceStates,
    SimilarityResult,
    default_texts,
    eager_attention,
    layerwise_similarity,
    make_batches,
    read_texts,
)

__all__ = [
    "LayerSimilarity", "ReferenceStates", "SimilarityResult", "default_texts", "eager_attention",
    "layerwise_similarity", "make_batches", "read_texts",
]  # fmt: skip
