"""ONNX export and import of whole models, through the optional ``onnx`` package.

- :func:`export` writes a cnnblas model (LeNet-5, the tutorial's network, the
  ResNets, any :class:`~cnnblas.nn.Sequential` of the supported layers) as a
  checked ONNX file, computed in eval mode.
- :func:`load` builds a trainable cnnblas module from an ONNX graph of the
  same operators, including what ``torch.onnx.export`` writes for such
  networks (BatchNorm folded into the convolutions, ``Reshape`` flattening).

``onnx`` is imported only when one of them is called: without it they raise
ImportError saying ``pip install 'cnnblas[onnx]'``.

>>> import numpy as np
>>> from cnnblas import nn, onnx as cnnblas_onnx
>>> model = nn.lenet5(input_size=8, rng=0)
>>> cnnblas_onnx.export(model, "lenet5.onnx", (1, 8, 8))          # doctest: +SKIP
>>> again = cnnblas_onnx.load("lenet5.onnx")                       # doctest: +SKIP
"""

from cnnblas.onnx.export import export, to_onnx
from cnnblas.onnx.graph import GraphModule
from cnnblas.onnx.load import load

__all__ = ["export", "to_onnx", "load", "GraphModule"]
