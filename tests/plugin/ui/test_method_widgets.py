"""plugin/ui/method_widgets.py: Advanced panels built from the backend's parameter descriptions."""

from __future__ import annotations

from qgis.PyQt.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QLineEdit, QSpinBox

from plugin.parameters import MethodRegistry
from plugin.ui.method_widgets import MethodSection
from tests.plugin.ui.test_wheel_guard import wheel

#: A method as the backend's ``info`` describes it (docs/protocol.md, ``param_info``).
INFO = {
    "methods": {
        "calliper": {
            "title": "CaLLiPer (contrastive POI text and location)",
            "dim": 128,
            "views": ["poi_points", "poi_texts"],
            "min_views": 2,
            "view_inputs": {"poi_points": "pois", "poi_texts": "pois"},
            "params": {"names": "auto", "hidden": 256, "learning_rate": 5e-4, "template": "A {category}",
                       "scale_with_extent": False},
            "param_info": {
                "names": {"label": "Use POI names", "help": "Put POI names in the descriptions.", "type": "str",
                          "default": "auto", "choices": ["auto", "yes", "no"], "min": None, "max": None},
                "hidden": {"label": "Hidden width", "help": "Width of the location network's layers.",
                           "type": "int", "default": 256, "choices": [], "min": 1, "max": 4096},
                "learning_rate": {"label": "Learning rate", "help": "AdamW's step size.", "type": "float",
                                  "default": 5e-4, "choices": [], "min": 1e-7, "max": 1.0},
                "template": {"label": "POI description", "help": "Sentence describing a POI.", "type": "str",
                             "default": "A {category}", "choices": [], "min": None, "max": None},
            },
        }
    }
}


def section(qtbot) -> MethodSection:
    registry = MethodRegistry()
    registry.update_from_info(INFO)
    widget = MethodSection(registry.get("calliper"))
    qtbot.addWidget(widget)
    return widget


def form_labels(widget: MethodSection) -> dict[str, QLabel]:
    form = widget.advanced.layout()
    assert isinstance(form, QFormLayout)
    out = {}
    for row in range(form.rowCount()):
        item = form.itemAt(row, QFormLayout.ItemRole.LabelRole)
        if item is not None and isinstance(item.widget(), QLabel):
            out[item.widget().text()] = item.widget()
    return out


def test_enumerations_are_dropdowns_and_numbers_have_ranges(qtbot) -> None:
    widget = section(qtbot)
    names = widget.param_widgets["names"]
    assert isinstance(names, QComboBox)
    assert [names.itemText(i) for i in range(names.count())] == ["auto", "yes", "no"]
    hidden = widget.param_widgets["hidden"]
    assert isinstance(hidden, QSpinBox) and (hidden.minimum(), hidden.maximum()) == (1, 4096)
    rate = widget.param_widgets["learning_rate"]
    assert isinstance(rate, QDoubleSpinBox) and rate.minimum() == 1e-7 and rate.maximum() == 1.0
    assert rate.text() == "0.0005"  # not 0.000500000
    assert isinstance(widget.param_widgets["template"], QLineEdit)
    assert isinstance(widget.param_widgets["scale_with_extent"], QCheckBox)  # no description: still offered


def test_readable_labels_and_tooltips(qtbot) -> None:
    widget = section(qtbot)
    labels = form_labels(widget)
    assert {"Use POI names", "Hidden width", "Learning rate", "POI description", "Scale with extent"} <= set(labels)
    assert not {"names", "hidden", "template"} & set(labels)
    assert labels["Hidden width"].toolTip() == "Width of the location network's layers."
    assert widget.param_widgets["hidden"].toolTip() == "Width of the location network's layers."


def test_values_round_trip_typed(qtbot) -> None:
    widget = section(qtbot)
    assert widget.choice().params == {"names": "auto", "hidden": 256, "learning_rate": 5e-4,
                                      "template": "A {category}", "scale_with_extent": False}
    widget.param_widgets["names"].setCurrentText("no")
    widget.param_widgets["learning_rate"].setValue(5e-5)  # small rates survive the spin box
    choice = widget.choice()
    assert choice.params["names"] == "no" and choice.params["learning_rate"] == 5e-5
    widget.set_choice(choice.__class__("calliper", 64, {"names": "yes", "hidden": 99999}))
    assert widget.choice().params["names"] == "yes"
    assert widget.choice().params["hidden"] == 4096  # clamped to the allowed range


def test_wheel_does_not_change_a_parameter(qtbot) -> None:
    widget = section(qtbot)
    widget.advanced.setCollapsed(False)
    widget.show()
    names = widget.param_widgets["names"]
    assert not wheel(names).isAccepted() and names.currentText() == "auto"
