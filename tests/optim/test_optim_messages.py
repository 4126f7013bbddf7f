"""Optimizers given a model or a non-iterable instead of its parameters."""

from __future__ import annotations

import pytest

from cnnblas import nn, optim


@pytest.mark.parametrize("make", [
    lambda params: optim.SGD(params, lr=0.1),
    lambda params: optim.Adam(params, lr=0.1),
])
def test_a_model_instead_of_its_parameters(make):
    with pytest.raises(TypeError, match=r"params must be an iterable of parameters, got a "
                                        r"Linear module: pass model\.parameters\(\)"):
        make(nn.Linear(3, 2))


def test_a_non_iterable():
    with pytest.raises(TypeError, match=r"params must be an iterable of parameters \(such as "
                                        r"model\.parameters\(\)\), got float"):
        optim.SGD(1.5, lr=0.1)
