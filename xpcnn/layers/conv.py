"""Convolutions: Conv2D and Conv2DTranspose (PyTorch's weight layouts and semantics)."""

from __future__ import annotations

from .._validate import pair, positive_int, sample_shape
from ..backend import namespace_of
from ..errors import ArgumentError
from ..functional.conv import (
    conv2d_backward_kernel,
    conv2d_geometry,
    conv2d_kernel,
    conv_transpose2d_backward_kernel,
    conv_transpose2d_geometry,
    conv_transpose2d_kernel,
)
from .base import Layer, Param, json_padding, padding_spec, parameter_options, weight_and_bias


class ConvBase(Layer):
    """What Conv2D and Conv2DTranspose share: the options, the weight's shape and fans and the
    output shape from the planned geometry. A subclass gives ``weight_layout(c)``."""

    def __init__(self, out_channels, kernel_size, stride, dilation, groups, bias, weight_init, bias_init) -> None:
        super().__init__()
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.dilation = pair(dilation, "dilation")
        self.groups = positive_int(groups, "groups")
        if self.out_channels % self.groups:
            raise ArgumentError(f"groups: must divide out_channels {self.out_channels}, got groups={self.groups}")
        self.bias, self.weight_init, self.bias_init, self.init_names = parameter_options(bias, weight_init, bias_init)

    def weight_shape(self, c: int) -> tuple[int, ...]:
        if c % self.groups:
            raise ArgumentError(f"groups: must divide the input channels {c}, got groups={self.groups}")
        return self.weight_layout(c)

    def output_shape(self, input_shape):
        input_shape = sample_shape(input_shape, f"{type(self).__name__} input_shape", "(C, H, W)", ndim=3)
        oh, ow = self.plan(input_shape).out_hw
        return (self.out_channels, oh, ow)

    def param_specs(self, input_shape):
        w_shape = self.weight_shape(input_shape[0])
        kh, kw = self.kernel_size
        # PyTorch's fans: weight.shape[1] * kh * kw in, out channels (per group) * kh * kw out.
        fan_in, fan_out = w_shape[1] * kh * kw, self.fan_out_channels(w_shape) * kh * kw
        specs = {"weight": Param(w_shape, self.weight_init, fan_in, fan_out)}
        if self.bias:
            specs["bias"] = Param((self.out_channels,), self.bias_init, fan_in, fan_out)
        return specs

    def config(self, **options) -> dict:
        return dict(out_channels=self.out_channels, kernel_size=list(self.kernel_size), stride=list(self.stride),
                    **options, dilation=list(self.dilation), groups=self.groups, bias=self.bias,
                    weight_init=self.init_names[0], bias_init=self.init_names[1])


class Conv2D(ConvBase):
    """2-D convolution (N, C, H, W) -> (N, out_channels, OH, OW); weight (out, C // groups, kh, kw)
    as ``torch.nn.Conv2d``; ``padding`` an int, a pair, ((top, bottom), (left, right)), "valid" or
    "same" (stride 1)."""

    def __init__(self, out_channels: int, kernel_size, *, stride=1, padding=0, dilation=1, groups=1, bias: bool = True,
                 weight_init="he_normal", bias_init="zeros") -> None:
        super().__init__(out_channels, kernel_size, stride, dilation, groups, bias, weight_init, bias_init)
        self.padding = padding_spec(padding, self.kernel_size, self.stride, self.dilation, strings=True)

    def weight_layout(self, c):
        return (self.out_channels, c // self.groups, *self.kernel_size)

    def fan_out_channels(self, w_shape):
        return self.out_channels // self.groups

    def plan(self, input_shape):
        return conv2d_geometry((1, *input_shape), self.weight_shape(input_shape[0]), self.stride, self.padding,
                               self.dilation, self.groups)

    def get_config(self):
        return self.config(padding=json_padding(self.padding))

    def forward(self, x, training=False):
        y, cols = conv2d_kernel(namespace_of(x), x, self.params["weight"], self.params.get("bias"), self.geometry,
                                keep_columns=training)
        self.save_for_backward(x, cols)
        return y

    def backward(self, grad_y):
        x, cols = self.saved
        grad_x, grad_w, grad_b = conv2d_backward_kernel(namespace_of(grad_y), grad_y, x, self.params["weight"],
                                                        self.geometry, bias=self.bias, cols=cols,
                                                        input_grad=self.needs_input_grad)
        weight_and_bias(self, grad_w, grad_b)
        return grad_x


class Conv2DTranspose(ConvBase):
    """Transposed 2-D convolution (N, C, H, W) -> (N, out_channels, OH, OW), weight
    (C, out_channels // groups, kh, kw) as ``torch.nn.ConvTranspose2d``."""

    def __init__(self, out_channels: int, kernel_size, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
                 bias: bool = True, weight_init="torch", bias_init="zeros") -> None:
        super().__init__(out_channels, kernel_size, stride, dilation, groups, bias, weight_init, bias_init)
        self.padding = pair(padding, "padding", minimum=0)
        self.output_padding = pair(output_padding, "output_padding", minimum=0)
        for a in range(2):
            if self.output_padding[a] >= max(self.stride[a], self.dilation[a]):
                raise ArgumentError(f"output_padding: must be smaller than stride or dilation (as PyTorch), got "
                                    f"output_padding {self.output_padding}, stride {self.stride}, "
                                    f"dilation {self.dilation}")

    def weight_layout(self, c):
        return (c, self.out_channels // self.groups, *self.kernel_size)

    def fan_out_channels(self, w_shape):
        return w_shape[0]

    def plan(self, input_shape):
        return conv_transpose2d_geometry((1, *input_shape), self.weight_shape(input_shape[0]), self.stride,
                                         self.padding, self.output_padding, self.dilation, self.groups)

    def get_config(self):
        return self.config(padding=list(self.padding), output_padding=list(self.output_padding))

    def forward(self, x, training=False):
        self.save_for_backward(x)
        return conv_transpose2d_kernel(namespace_of(x), x, self.params["weight"], self.params.get("bias"),
                                       self.geometry)

    def backward(self, grad_y):
        (x,) = self.saved
        grad_x, grad_w, grad_b = conv_transpose2d_backward_kernel(
            namespace_of(grad_y), grad_y, x, self.params["weight"], self.geometry, bias=self.bias,
            input_grad=self.needs_input_grad)
        weight_and_bias(self, grad_w, grad_b)
        return grad_x
