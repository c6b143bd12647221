"""The examples in the engine's docstrings run as tests."""

import doctest
import importlib
import pkgutil

import pytest

import headwater.engine

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(headwater.engine.__path__, "headwater.engine.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
