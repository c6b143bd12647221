"""The examples in the pipelines package's docstrings run as tests."""

import doctest
import importlib
import pkgutil

import pytest

import headwater.pipelines

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(headwater.pipelines.__path__, "headwater.pipelines.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
