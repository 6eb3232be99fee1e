"""One section per embedding method: a checkbox, the embedding size and an "Advanced" group.

The parameter editors are built from the backend's description of each parameter (``param_info`` of
its ``info`` answer, see docs/protocol.md): a readable label, a one-line tooltip, a dropdown for an
enumeration, a spin box limited to the allowed range. A bool becomes a QCheckBox, an int a QSpinBox,
a float a QDoubleSpinBox, free text a QLineEdit (lists and dicts as JSON). Adding a method or a
parameter to the backend adds it here without code changes.
"""

from __future__ import annotations

import json
import math
from typing import Any

from qgis.gui import QgsCollapsibleGroupBox
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..parameters import MethodChoice, MethodInfo
from .wheel_guard import guard_wheel

__all__ = ["MethodSection", "param_label", "param_widget", "set_widget_value", "widget_value"]

_INT_RANGE = (-10_000_000, 10_000_000)
_FLOAT_RANGE = (-1e7, 1e7)
_FLOAT_DECIMALS = 6  # at least: learning rates such as 5e-5 must survive the spin box's rounding


def _bound(value: Any, fallback: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else fallback


def _decimals(*values: Any) -> int:
    """Enough decimals for the smallest of ``values`` to show two significant digits."""
    decimals = _FLOAT_DECIMALS
    for value in values:
        if isinstance(value, float) and 0 < abs(value) < 1:
            decimals = max(decimals, min(10, math.ceil(-math.log10(abs(value))) + 2))
    return decimals


class _DecimalSpinBox(QDoubleSpinBox):
    """A QDoubleSpinBox that shows ``0.5`` and ``0.0005``, not ``0.500000`` and ``0.000500``."""

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt API
        text = self.locale().toString(float(value), "f", self.decimals())
        point = self.locale().decimalPoint()
        if point in text:
            text = text.rstrip("0").rstrip(point)
        return text


def param_widget(default: Any, parent: QWidget | None = None, spec: dict[str, Any] | None = None) -> QWidget:
    """The editor for a parameter whose default is ``default``, described by ``spec`` (``param_info``)."""
    spec = spec or {}
    choices = [str(c) for c in spec.get("choices") or []]
    if choices and isinstance(default, str):
        widget: QWidget = QComboBox(parent)
        widget.addItems(choices)
    elif isinstance(default, bool):
        widget = QCheckBox(parent)
    elif isinstance(default, int):
        widget = QSpinBox(parent)
        low, high = _bound(spec.get("min"), _INT_RANGE[0]), _bound(spec.get("max"), _INT_RANGE[1])
        widget.setRange(int(max(low, _INT_RANGE[0])), int(min(high, _INT_RANGE[1])))
    elif isinstance(default, float):
        widget = _DecimalSpinBox(parent)
        widget.setDecimals(_decimals(default, spec.get("min")))
        widget.setRange(_bound(spec.get("min"), _FLOAT_RANGE[0]), _bound(spec.get("max"), _FLOAT_RANGE[1]))
        widget.setStepType(QAbstractSpinBox.StepType.AdaptiveDecimalStepType)
    else:
        widget = QLineEdit(parent)
    set_widget_value(widget, default)
    if spec.get("help"):
        widget.setToolTip(str(spec["help"]))
    widget.setProperty("regionlens_default_type", type(default).__name__)
    return widget


def widget_value(widget: QWidget, default: Any) -> Any:
    """The value an editor made by :func:`param_widget` holds (typed like ``default``)."""
    if isinstance(widget, QComboBox):
        return widget.currentText()
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
    if isinstance(widget, QComboBox):
        text = str(value)
        if widget.findText(text) < 0:  # e.g. a value stored by an older version: kept, the backend judges it
            widget.addItem(text)
        widget.setCurrentIndex(widget.findText(text))
    elif isinstance(widget, QCheckBox):
        widget.setChecked(bool(value))
    elif isinstance(widget, QSpinBox):
        widget.setValue(int(value))
    elif isinstance(widget, QDoubleSpinBox):
        widget.setValue(float(value))
    elif isinstance(widget, QLineEdit):
        widget.setText(value if isinstance(value, str) else ("" if value is None else json.dumps(value)))


def param_label(name: str, spec: dict[str, Any] | None = None) -> str:
    """The backend's label, else one made from the name (``neighbourhood_m`` -> ``Neighbourhood (m)``)."""
    if spec and spec.get("label"):
        return str(spec["label"])
    for suffix, unit in (("_m", "m"), ("_km", "km"), ("_s", "s")):
        if name.endswith(suffix):
            return f"{name[: -len(suffix)].replace('_', ' ')} ({unit})".capitalize()
    return name.replace("_", " ").capitalize()


def _connect_changed(widget: QWidget, slot) -> None:
    if isinstance(widget, QComboBox):
        widget.currentIndexChanged.connect(slot)
    elif isinstance(widget, QCheckBox):
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
            spec = info.param_info.get(name, {})
            widget = param_widget(default, self.advanced, spec)
            widget.setObjectName(f"{info.name}_{name}")
            self.param_widgets[name] = widget
            label = QLabel(param_label(name, spec), self.advanced)
            label.setWordWrap(True)  # long names wrap instead of widening a narrow dock
            label.setToolTip(widget.toolTip())
            label.setBuddy(widget)
            form.addRow(label, widget)
            _connect_changed(widget, self._emit_changed)
        layout.addWidget(self.advanced)
        self.checkbox.toggled.connect(self._emit_changed)
        self.dim.valueChanged.connect(self._emit_changed)
        guard_wheel(self)  # scrolling past the panel never changes a value

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
