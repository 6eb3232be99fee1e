"""ReFound (Xiao et al., KDD 2024): a POI and imagery foundation model with geospatial experts.

See :mod:`backend.models.refound.embedder` for how RegionLens trains and uses it.
"""

from backend.models.refound.embedder import RefoundEmbedder, RefoundParams

__all__ = ["RefoundEmbedder", "RefoundParams"]
