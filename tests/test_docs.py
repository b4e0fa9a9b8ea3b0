"""The ``Examples:`` in the public docstrings run and print what they show."""

import doctest

import pytest

from garo_optax import _controller, _state, _transform


@pytest.mark.parametrize("module", [_transform, _state, _controller])
def test_docstring_examples(module):
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0
  assert result.failed == 0
