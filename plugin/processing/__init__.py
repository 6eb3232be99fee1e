"""RegionLens in QGIS's Processing framework: toolbox, batch mode, Graphical Modeler, ``qgis_process``.

Provider id ``regionlens`` with three algorithms, each a thin front end to a backend worker action
(docs/protocol.md):

- ``regionlens:embed`` (:mod:`.embed`): the whole run (``run``): embeddings, clusters, predictions;
- ``regionlens:cluster`` (:mod:`.cluster`): cluster an existing embedding layer (``cluster``);
- ``regionlens:predict`` (:mod:`.predict`): predict a label from an embedding layer (``predict``).

Shared parts: :mod:`._base` (the base algorithm and the worker call), :mod:`._inputs` (exporting the
input layers for the worker) and :mod:`._outputs` (layer outputs loaded and styled on completion).
The provider is registered by ``RegionLensPlugin.initProcessing`` (plugin/main.py).
"""

from .provider import RegionLensProvider

__all__ = ["RegionLensProvider"]
