"""plugin/layers_added.py: the one follower of the project's layers (the plugin's layer actions, the explorer's
combos), with real QGIS."""

from __future__ import annotations

import gc
import weakref

from qgis.core import QgsProject, QgsVectorLayer

from plugin.layers_added import LayersAdded


class _Holder:
    """What the plugin and the explorer are to the follower: an object that holds it and gets the layers."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []
        self.follower = LayersAdded(self.got)

    def got(self, layers) -> None:  # noqa: ANN001
        self.seen.append([layer.name() for layer in layers])


def _add(project: QgsProject, name: str) -> str:
    layer = QgsVectorLayer("Point?crs=EPSG:4326", name, "memory")
    project.addMapLayer(layer)
    return layer.id()


def test_follows_the_layers_there_and_added_until_stopped(qgis_new_project: QgsProject) -> None:
    holder = _Holder()
    ids = [_add(qgis_new_project, "a")]
    holder.follower.follow(True)
    holder.follower.follow(True)  # again: no second connection, no second call
    assert holder.seen == [["a"]] and holder.follower.project is qgis_new_project
    ids.append(_add(qgis_new_project, "b"))
    assert holder.seen == [["a"], ["b"]]
    holder.follower.follow(False)
    holder.follower.follow(False)
    ids.append(_add(qgis_new_project, "c"))
    assert holder.seen == [["a"], ["b"]] and holder.follower.project is None
    qgis_new_project.removeMapLayers(ids)


def test_the_follower_keeps_nothing_alive(qgis_new_project: QgsProject) -> None:
    holder = _Holder()
    holder.follower.follow(True)
    gone = weakref.ref(holder)
    gc.disable()  # only reference counting: a cycle through the follower would keep the holder
    try:
        del holder
        assert gone() is None
    finally:
        gc.enable()
    layer_id = _add(qgis_new_project, "after")  # the connection went with the holder
    qgis_new_project.removeMapLayer(layer_id)
