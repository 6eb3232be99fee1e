"""RegionLens backend: learn region embeddings from POIs, imagery, mobility and land use.

Importable without QGIS. Heavy libraries (torch, sentence-transformers) are imported inside the
functions that need them so that `import backend` stays cheap.
"""

from regionlens_common import VERSION

#: metadata.txt's version, read by the contract module (regionlens_common.py).
__version__ = VERSION

__all__ = ["__version__"]
