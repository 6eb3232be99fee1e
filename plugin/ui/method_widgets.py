"""One section per embedding method: a checkbox, the embedding size and an "Advanced" group.

The parameter widgets are generated from the method's default values (registry
:data:`plugin.parameters.METHODS`): a bool becomes a QCheckBox, an int a QSpinBox, a float a
QDoubleSpinBox, anything else a QLineEdit (lists and dicts as JSON). Adding a method to the backend
adds its section here without code changes.
"""

from __future__ import annotations

import json
from typing import Any

from qgis.gui import QgsCollapsibleGroupBox
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..parameters import MethodChoice, MethodInfo

__all__ = ["MethodSection", "param_widget", "widget_value", "set_widget_value"]

_INT_RANGE = (-10_000_000, 10_000_000)


def param_widget(default: Any, parent: QWidget | None = None) -> QWidget:
    """The editor for a parameter whose default is ``default``."""
    if isinstance(default, bool):
        widget: QWidget = QCheckBox(parent)
    elif isinstance(default, int):
        widget = QSpinBox(parent)
        widget.setRange(*_INT_RANGE)  # (the backend checks the value)
    elif isinstance(default, float):
        widget = QDoubleSpinBox(parent)
        widget.setRange(-1e7, 1e7)
        widget.setDecimals(3)
    else:
        widget = QLineEdit(parent)
    set_widget_value(widget, default)
    widget.setProperty("regionlens_default_type", type(default).__name__)
    return widget


def widget_value(widget: QWidget, default: Any) -> Any:
    """The value an editor made by :func:`param_widget` holds (typed like ``default``)."""
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, QSpinBox):
        return int(widget.value())
    if isinstance(widget, QDoubleSpinBox):
        return float(widget.value())
    text = widget.text() if isinstance(widget, QLineEdit) else ""
    if isinstance(default, str) or default is None:
        return text if text or default is not None else None
    try:
        return json.loads(text)
    except ValueError:
        return default


def set_widget_value(widget: QWidget, value: Any) -> None:
    """Show ``value`` in an editor made by :func:`param_widget`."""
    if isinstance(widget, QCheckBox):
        widget.setChecked(bool(value))
    elif isinstance(widget, QSpinBox):
        widget.setValue(int(value))
    elif isinstance(widget, QDoubleSpinBox):
        widget.setValue(float(value))
    elif isinstance(widget, QLineEdit):
        widget.setText(value if isinstance(value, str) else ("" if value is None else json.dumps(value)))


def _label(name: str) -> str:
    """``neighbourhood_m`` -> ``neighbourhood (m)``, ``log1p_counts`` -> ``log1p counts``."""
    for suffix, unit in (("_m", "m"), ("_km", "km"), ("_s", "s")):
        if name.endswith(suffix):
            return f"{name[: -len(suffix)].replace('_', ' ')} ({unit})"
    return name.replace("_", " ")


def _connect_changed(widget: QWidget, slot) -> None:
    if isinstance(widget, QCheckBox):
        widget.toggled.connect(slot)
    elif isinstance(widget, (QSpinBox, QDoubleSpinBox)):
        widget.valueChanged.connect(slot)
    elif isinstance(widget, QLineEdit):
        widget.textChanged.connect(slot)


class MethodSection(QWidget):
    """Checkbox, embedding size and collapsed "Advanced" parameters of one method.

    Args:
        info: The method's description and defaults.
        parent: Parent widget.
    """

    changed = pyqtSignal()

    def __init__(self, info: MethodInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.info = info
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        short = info.title.split(" (")[0] if info.title else info.name
        self.checkbox = QCheckBox(short or info.name, self)
        self.checkbox.setObjectName(f"method_{info.name}")
        self.checkbox.setToolTip(f"{info.title} \u2014 learns from: {', '.join(info.views) or 'its inputs'}")
        layout.addWidget(self.checkbox)
        self.advanced = QgsCollapsibleGroupBox("Advanced", self)
        self.advanced.setSaveCollapsedState(False)
        self.advanced.setCollapsed(True)
        form = QFormLayout(self.advanced)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.dim = QSpinBox(self.advanced)
        self.dim.setRange(1, 4096)
        self.dim.setValue(int(info.dim))
        self.dim.setToolTip("Size of the embedding vector of each region")
        form.addRow("Embedding size", self.dim)
        self.param_widgets: dict[str, QWidget] = {}
        for name, default in info.params.items():
            widget = param_widget(default, self.advanced)
            widget.setObjectName(f"{info.name}_{name}")
            self.param_widgets[name] = widget
            form.addRow(_label(name), widget)
            _connect_changed(widget, self._emit_changed)
        layout.addWidget(self.advanced)
        self.checkbox.toggled.connect(self._emit_changed)
        self.dim.valueChanged.connect(self._emit_changed)

    @property
    def name(self) -> str:
        """The method's registry name."""
        return self.info.name

    def is_checked(self) -> bool:
        """Whether the method will run."""
        return self.checkbox.isChecked()

    def set_checked(self, checked: bool) -> None:
        """Tick or untick the method."""
        self.checkbox.setChecked(checked)

    def choice(self) -> MethodChoice:
        """The method with the dimension and parameters shown."""
        params = {name: widget_value(w, self.info.params.get(name)) for name, w in self.param_widgets.items()}
        return MethodChoice(self.info.name, int(self.dim.value()), params)

    def set_choice(self, choice: MethodChoice) -> None:
        """Show a stored choice (unknown parameters are ignored)."""
        self.dim.setValue(int(choice.dim))
        for name, value in choice.params.items():
            widget = self.param_widgets.get(name)
            if widget is not None:
                try:
                    set_widget_value(widget, value)
                except (TypeError, ValueError):
                    set_widget_value(widget, self.info.params.get(name))

    def _emit_changed(self, *_args: object) -> None:
        self.changed.emit()
