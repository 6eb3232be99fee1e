"""Every method describes each parameter (label, help, type, choices, range) for the plugin's menus."""

from __future__ import annotations

from dataclasses import fields

import pytest

from backend.errors import ConfigError
from backend.models import EMBEDDERS
from backend.models._base import EmbedderParams, describe_params, param


@pytest.mark.parametrize("name", sorted(EMBEDDERS))
def test_every_parameter_is_described(name: str) -> None:
    cls = EMBEDDERS[name]
    info = cls.describe()["param_info"]
    assert list(info) == [f.name for f in fields(cls.Params)]
    assert set(info) == set(cls.describe()["params"])
    for key, desc in info.items():
        assert desc["label"] and desc["label"] != key, key  # a readable label, not the raw name
        assert desc["help"].strip() and "\n" not in desc["help"], key
        assert desc["type"] in {"bool", "int", "float", "str"}
        if desc["choices"]:
            assert desc["type"] == "str" and desc["default"] in desc["choices"], key
        if desc["min"] is not None:
            assert desc["default"] >= desc["min"], key
        if desc["max"] is not None:
            assert desc["default"] <= desc["max"], key


@pytest.mark.parametrize("name", sorted(EMBEDDERS))
def test_every_offered_choice_is_accepted(name: str) -> None:
    """A dropdown must never offer a value the method then rejects."""
    cls = EMBEDDERS[name]
    for key, desc in cls.describe()["param_info"].items():
        for choice in desc["choices"]:
            cls(**{key: choice})  # no ConfigError


def test_enumerations_are_choices() -> None:
    calliper = EMBEDDERS["calliper"].describe()["param_info"]
    assert calliper["names"]["choices"] == ["auto", "yes", "no"]
    assert calliper["region_mode"]["choices"] == ["polygon", "centroid", "poi"]
    assert calliper["hidden"]["label"] == "Hidden width" and calliper["hidden"]["min"] == 1
    with pytest.raises(ConfigError):
        EMBEDDERS["calliper"](region_mode="square")  # not among the choices


def test_describe_params_of_a_dataclass() -> None:
    from dataclasses import dataclass

    @dataclass
    class P(EmbedderParams):
        mode: str = param("a", "Mode", "Which mode.", choices=("a", "b"))
        size: int = param(3, "Size", "How big.", minimum=1, maximum=9)

    assert describe_params(P) == {
        "mode": {"label": "Mode", "help": "Which mode.", "type": "str", "default": "a", "choices": ["a", "b"],
                 "min": None, "max": None},
        "size": {"label": "Size", "help": "How big.", "type": "int", "default": 3, "choices": [], "min": 1, "max": 9},
    }


def test_a_method_declares_its_params_class_and_rules_once() -> None:
    """``Embedder[P]`` makes ``P`` the method's ``Params``; ``P.checks`` is enforced by the base class and an
    embedder built without ``dim`` gets its ``default_dim``."""
    from dataclasses import dataclass

    import numpy as np

    from backend.models._base import Embedder

    @dataclass
    class P(EmbedderParams):
        size: int = param(3, "Size", "How big.", minimum=1)

        def checks(self) -> list[tuple[bool, str]]:
            return [(self.size >= 1, "size must be >= 1")]

    class Sized(Embedder[P]):
        name = "sized"
        default_dim = 5

        def _fit(self, views, progress) -> None:  # noqa: ANN001
            pass

        def _transform(self, views, progress) -> np.ndarray:  # noqa: ANN001
            return np.zeros((len(views), self.dim))

        def _save_weights(self, folder) -> None:  # noqa: ANN001
            pass

        def _load_weights(self, folder) -> None:  # noqa: ANN001
            pass

    class Child(Sized):  # a subclass without a type argument keeps its parent's parameters
        name = "child"

    assert Sized.Params is P and Child.Params is P
    assert Sized().dim == 5 and Sized(dim=2).dim == 2 and Sized(size=4).params.size == 4
    assert Sized.describe()["param_info"]["size"]["min"] == 1
    with pytest.raises(ConfigError, match=r"^child: size must be >= 1\.$"):
        Child(size=0)
