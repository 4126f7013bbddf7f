"""Every stateless op in one namespace: ``import cnnblas.functional as F``.

The implementations live in small modules under :mod:`cnnblas.ops` (one job
each); this module only gathers them, like ``torch.nn.functional``.
"""

from cnnblas.ops.activations import (
    leaky_relu,
    leaky_relu_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    tanh,
    tanh_backward,
)
from cnnblas.ops.algorithms import choose_algorithm
from cnnblas.ops.batchnorm import (
    batch_norm_apply,
    batch_norm_grad_sums,
    batch_norm_input_grad,
    batch_norm_statistics,
)
from cnnblas.ops.conv import col2im, conv2d, conv2d_backward, conv2d_input_grad, im2col
from cnnblas.ops.conv_transpose import conv_transpose2d, conv_transpose2d_backward
from cnnblas.ops.linear import linear, linear_backward
from cnnblas.ops.losses import log_softmax, mse_loss, softmax, softmax_cross_entropy
from cnnblas.ops.pooling import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward

__all__ = [
    "im2col", "col2im", "conv2d", "conv2d_backward", "conv2d_input_grad", "choose_algorithm",
    "conv_transpose2d", "conv_transpose2d_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "relu", "relu_backward", "leaky_relu", "leaky_relu_backward",
    "sigmoid", "sigmoid_backward", "tanh", "tanh_backward",
    "linear", "linear_backward",
    "batch_norm_statistics", "batch_norm_apply", "batch_norm_grad_sums", "batch_norm_input_grad",
    "softmax", "log_softmax", "softmax_cross_entropy", "mse_loss",
]
