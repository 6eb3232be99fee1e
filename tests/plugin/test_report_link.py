"""The finished run's message stays and links the report; Open run results opens report.html; Details wraps;
the run's layer group is expanded in the layer tree view (plugin/main.py, plugin/ui/messages.py, plugin/results.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import Qgis, QgsLayerTreeModel, QgsProject
from qgis.gui import QgsLayerTreeView
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import QPlainTextEdit

from plugin import main as plugin_main
from plugin.main import RegionLensPlugin
from plugin.report import REPORT_NAME, run_report
from plugin.tasks import RunParameters, RunSucceeded, RunTask
from plugin.ui.messages import DetailsDialog


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths the plugin asked the desktop to open (nothing is opened for real)."""
    urls: list[str] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: urls.append(url.toLocalFile()) or True))
    return urls


@pytest.fixture(autouse=True)
def empty_bar(qgis_iface):
    """Messages that stay until closed would otherwise outlive the test."""
    qgis_iface.messageBar().clearWidgets()
    yield
    qgis_iface.messageBar().clearWidgets()


def _items(bar, text: str):
    return [item for item in bar.items() if text in item.text()]


def test_finished_message_stays_and_opens_the_report(qgis_iface, qgis_new_project, run_gpkg: Path, opened) -> None:
    report = run_gpkg.parent / REPORT_NAME
    report.write_text("<html><body>RegionLens report</body></html>", encoding="utf-8")
    plugin = RegionLensPlugin(qgis_iface)
    task = RunTask(RunParameters(Path("python"), {}, run_gpkg.parent))
    task.status.log.append("a log line " + "that goes on " * 40)
    outcome = RunSucceeded({"gpkg": str(run_gpkg), "report_html": str(report), "report": ["notes"]}, "cpu", 12.5)
    bar = qgis_iface.messageBar()
    plugin._run_finished(task, outcome, None)
    (item,) = _items(bar, "finished on cpu")
    assert item.duration() == 0  # stays until closed (it vanished before the Details could be read)
    assert [button.text() for button in item.action_buttons] == ["Open report"]
    item.action_buttons[0].click()
    assert opened == [str(report.resolve())]
    item.details_button.click()
    assert "a log line" in item.details_dialog.text()
    item.details_dialog.close()
    # The "Loaded ... layers" message links the report too.
    (loaded,) = _items(bar, "Loaded")
    loaded.action_buttons[0].click()
    assert opened[-1] == str(report.resolve())


def test_finished_message_without_report_has_no_button(qgis_iface, qgis_new_project, run_gpkg: Path) -> None:
    plugin = RegionLensPlugin(qgis_iface)
    task = RunTask(RunParameters(Path("python"), {}, run_gpkg.parent))
    plugin._run_finished(task, RunSucceeded({"gpkg": str(run_gpkg)}, "cpu", 1.0), None)
    (item,) = _items(qgis_iface.messageBar(), "finished on cpu")
    assert item.action_buttons == [] and item.duration() == 0


def test_open_run_results_opens_a_report(qgis_iface, qgis_new_project: QgsProject, run_gpkg: Path, opened,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    report = run_gpkg.parent / REPORT_NAME
    report.write_text("<html></html>", encoding="utf-8")
    chosen = {"path": str(report)}
    monkeypatch.setattr(plugin_main.QFileDialog, "getOpenFileName",
                        lambda *args, **kwargs: (chosen["path"], ""))
    plugin = RegionLensPlugin(qgis_iface)
    plugin.initGui()
    try:
        plugin.open_results_action.trigger()
        assert opened == [str(report.resolve())]
        assert not qgis_new_project.mapLayers()  # a report opens, nothing is loaded
        report.unlink()
        assert plugin.open_report(run_gpkg.parent) is False
        assert any("No run report" in m for m in qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Warning))
    finally:
        plugin.unload()
    assert run_report(run_gpkg) is None


def test_details_dialog_wraps_long_lines(qtbot) -> None:
    dialog = DetailsDialog("log", "x" * 20 + " word" * 400)
    qtbot.addWidget(dialog)
    dialog.resize(400, 300)
    dialog.show()
    qtbot.waitExposed(dialog)
    assert dialog.text_edit.lineWrapMode() == QPlainTextEdit.LineWrapMode.WidgetWidth
    assert dialog.text_edit.horizontalScrollBar().maximum() == 0  # nothing to scroll sideways


def test_run_group_is_expanded_in_the_layer_tree_view(qgis_iface, qgis_new_project: QgsProject, make_run_gpkg,
                                                      tmp_path: Path, monkeypatch, qtbot) -> None:
    """The walk found a run's group collapsed after some runs: the view showed the group collapsed whenever the
    group on top before was expanded (every other run, when the person leaves the groups open)."""
    view = QgsLayerTreeView()
    model = QgsLayerTreeModel(qgis_new_project.layerTreeRoot(), view)  # the view does not own its model
    view.setModel(model)
    view.resize(300, 600)
    view.show()
    qtbot.waitExposed(view)
    monkeypatch.setattr(qgis_iface, "layerTreeView", lambda: view, raising=False)
    plugin = RegionLensPlugin(qgis_iface)
    loaded = []
    for k in range(3):
        loaded.append(plugin.open_run_results(make_run_gpkg(tmp_path / f"run_{k}", methods=("baseline", "calliper"))))
        qtbot.wait(20)
        group = loaded[-1].group
        assert group.isExpanded() and view.isExpanded(view.node2index(group)), k
        assert view.isExpanded(view.node2index(group.findGroup("baseline")))
        assert not view.isExpanded(view.node2index(group.findGroup("calliper")))
    view.collapse(view.node2index(loaded[0].group))  # a group the person collapsed stays collapsed
    plugin.open_run_results(make_run_gpkg(tmp_path / "run_3"))
    assert not view.isExpanded(view.node2index(loaded[0].group))
