"""HAFusion (Sun et al., "Urban Region Representation Learning with Attentive Fusion", ICDE 2024,
arXiv 2312.04606): the published ``reference`` configuration and a ``scalable`` one.

``embedder`` holds the :class:`HAFusionEmbedder` (RegionLens interface), ``model`` the torch modules,
``losses`` the training losses, ``data`` the inputs and targets built from views, ``naive`` a literal
unfused implementation used to check and time the fused reference network.
"""

from backend.models.hafusion.embedder import HAFusionEmbedder, HAFusionParams

__all__ = ["HAFusionEmbedder", "HAFusionParams"]
