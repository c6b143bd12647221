"""The examples in docstrings run as tests, in every module of the package."""

import doctest
import importlib
import pkgutil

import pytest

import headwater

MODULES = sorted(m.name for m in pkgutil.walk_packages(headwater.__path__, "headwater."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
