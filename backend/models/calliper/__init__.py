"""CaLLiPer (Wang et al., "CaLLiPer: Contrastive Language-Location Pre-training for urban region
representations", arXiv 2411.06229): POI text-location contrastive learning, inductive region embeddings.

``embedder`` holds the :class:`CaLLiPerEmbedder` (RegionLens interface), ``text`` the POI descriptions
and the cached frozen sentence encodings, ``location`` the grid encoding and residual MLP, ``model`` the
network and the symmetric InfoNCE loss.
"""

from backend.models.calliper.embedder import CaLLiPerEmbedder, CaLLiPerParams

__all__ = ["CaLLiPerEmbedder", "CaLLiPerParams"]
