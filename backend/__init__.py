"""RegionLens backend: learn region embeddings from POIs, imagery, mobility and land use.

Importable without QGIS. Heavy libraries (torch, sentence-transformers) are imported inside the
functions that need them so that `import backend` stays cheap.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
