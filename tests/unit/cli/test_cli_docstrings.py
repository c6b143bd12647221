"""The examples in the client commands' docstrings run as tests."""

import doctest
import importlib

import pytest

MODULES = ["headwater.cli.batches", "headwater.cli.client", "headwater.cli.tail"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
