"""CooKIE (Namgung et al., "Less is More: Multimodal Region Representation via Pairwise Inter-view Learning",
arXiv 2505.18178): unique and pairwise-shared information of two or more region modalities.

``embedder`` holds the :class:`CooKIEEmbedder` (RegionLens interface) and documents every design choice
the paper leaves open, ``modalities`` turns views into one input vector per modality (with the cached frozen
text and image encoders), ``encoders`` the per-modality MLP trunks, ``model`` the network with its unique
and pairwise shared heads, ``losses`` InfoNCE and the unique/shared separation term, ``synthetic`` views
with known shared and unique factors for tests and benchmarks.
"""

from backend.models.cookie.embedder import CooKIEEmbedder, CooKIEParams

__all__ = ["CooKIEEmbedder", "CooKIEParams"]
