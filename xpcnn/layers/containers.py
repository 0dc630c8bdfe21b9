"""Containers: layers in named branches, built, walked and run in order.

:class:`Container` is what Sequential (the model, :mod:`xpcnn.model`) and :class:`Residual`
share: building every branch (then swapping in the fused forms, :mod:`xpcnn.layers.fused`),
walking every nested layer with its path, and running a branch forward and backward. Paths
name a layer inside the model: ``"3"``, ``"3.block.0"``; parameter keys add the parameter's
name: ``"3.block.0.weight"``.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..backend import fewest_operations_for, namespace_of
from ..errors import ArgumentTypeError, ExportError, LayerContractError, ShapeError
from .base import Layer, describe, layers_from_config
from .fused import rewrite


class Container(Layer):
    """Layers in named branches (``{"": [...]}`` for a plain stack, ``{"block": [...], "shortcut":
    [...]}`` for a residual block). ``fuse``: run fusable pairs as one op (same numbers)."""

    def __init__(self, branches: dict[str, list[Layer]]) -> None:
        super().__init__()
        if not isinstance(branches, dict):
            raise ArgumentTypeError(f"branches: expected a dict of branch names to lists of layers, "
                                    f"got {type(branches).__name__}")
        self.branches = {name: self.layer_list(layers, f"branches[{name!r}]", allow_empty=True)
                         for name, layers in branches.items()}
        self.chains = {name: list(layers) for name, layers in branches.items()}
        self.fuse = True

    @staticmethod
    def layer_list(layers, name: str, *, allow_empty: bool = False) -> list[Layer]:
        """``layers`` as a list of layers, or an error naming ``name``."""
        if isinstance(layers, (Layer, str, bytes)) or not hasattr(layers, "__iter__"):
            raise ArgumentTypeError(f"{name}: expected a list of xpcnn layers such as [layers.Flatten(), "
                                    f"layers.Dense(10)], got {type(layers).__name__}")
        layers = list(layers)
        if not layers and not allow_empty:
            raise ShapeError(f"{name}: expected at least one layer, got an empty list")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer) or "" in getattr(layer, "branches", {}):  # a Sequential is a model
                raise ArgumentTypeError(f"{name}[{i}]: expected an xpcnn layer (e.g. layers.Conv2D; a Sequential's "
                                        f"layers, [*model.layers], not the Sequential), got {type(layer).__name__}")
            if not hasattr(layer, "params"):
                raise LayerContractError(f"{name}[{i}] ({type(layer).__name__}): has no params; its __init__ must "
                                         "call super().__init__()")
        return layers

    # -- walking
    def children(self) -> list[tuple[str, Layer]]:
        """(path, layer) of the direct sublayers: ``"0"`` in a stack, ``"block.0"`` in a branch."""
        return [(f"{name}.{i}" if name else str(i), layer)
                for name, layers in self.branches.items() for i, layer in enumerate(layers)]

    def walk(self) -> Iterator[tuple[str, Layer]]:
        """(path, layer) for every nested layer, depth first: ``"3"``, ``"3.block.0"``."""
        for path, layer in self.children():
            yield path, layer
            if isinstance(layer, Container):
                yield from ((f"{path}.{sub}", inner) for sub, inner in layer.walk())

    def run_layers(self) -> list[Layer]:
        """Every layer a forward or backward touches, once each: the nested layers and the fused
        forms the containers run in their place."""
        found = {id(layer): layer for _, layer in self.walk()}
        for container in [self, *(layer for layer in found.values() if isinstance(layer, Container))]:
            found.update({id(layer): layer for chain in container.chains.values() for layer in chain})
        return list(found.values())

    def leaves(self) -> list[tuple[str, Layer]]:
        """(path, layer) of every nested layer that is not a container."""
        return [(path, layer) for path, layer in self.walk() if not isinstance(layer, Container)]

    def named_parameters(self) -> list[tuple[str, Layer, str]]:
        """(key, layer, name) for every parameter, depth first (weight before bias)."""
        return [(f"{path}.{name}", layer, name) for path, layer in self.leaves() for name in layer.params]

    def named_buffers(self) -> list[tuple[str, Layer, str]]:
        """(key, layer, name) for every buffer (BatchNorm running statistics), depth first."""
        return [(f"{path}.{name}", layer, name) for path, layer in self.leaves() for name in layer.buffers]

    # -- shapes and building
    def branch_shape(self, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        for layer in self.branches[name]:
            shape = tuple(layer.output_shape(shape))
        return shape

    def specs(self, input_shape, kind: str) -> dict:
        """The nested layers' declarations keyed by path: ``kind`` "param_specs" or "buffer_specs"."""
        out = {}
        for name, layers in self.branches.items():
            shape = tuple(input_shape)
            for i, layer in enumerate(layers):
                prefix = f"{name}.{i}" if name else str(i)
                out.update({f"{prefix}.{key}": spec for key, spec in getattr(layer, kind)(shape).items()})
                shape = tuple(layer.output_shape(shape))
        return out

    def param_specs(self, input_shape):
        return self.specs(input_shape, "param_specs")

    def buffer_specs(self, input_shape):
        return self.specs(input_shape, "buffer_specs")

    def build(self, input_shape, *, rng, backend, dtype):
        self.input_shape = tuple(input_shape)
        out = self.output_shape(self.input_shape)
        for layers in self.branches.values():
            shape = self.input_shape
            for layer in layers:
                shape = layer.build(shape, rng=rng, backend=backend, dtype=dtype)
        self.plan_chains(backend, dtype)
        return out

    def plan_chains(self, backend, dtype: str) -> None:
        """What :meth:`forward` runs: each branch with its fused forms swapped in (``fuse``), those
        that pay where the kernels take their fewest-operations forms only there."""
        few = fewest_operations_for(backend.asarray(0.0, dtype=dtype))
        self.chains = {name: rewrite(layers, few) if self.fuse else list(layers)
                       for name, layers in self.branches.items()}

    def get_state(self):
        states = {path: layer.get_state() for path, layer in self.children()}
        return {k: v for k, v in states.items() if v}

    def set_state(self, state):
        children = dict(self.children())
        for path, sub in state.items():
            if path not in children or not isinstance(sub, dict):
                raise ArgumentTypeError(f"states[{path!r}]: expected a sublayer's path with a dict state")
            children[path].set_state(sub)


def run_forward(layers: list[Layer], x, training: bool):
    """``x`` through ``layers`` in order."""
    for layer in layers:
        x = layer.forward(x, training=training)
    return x


def run_backward(layers: list[Layer], grad_y, needs_input_grad: bool):
    """``grad_y`` back through ``layers``; the first layer's input gradient only when asked."""
    for i in range(len(layers) - 1, -1, -1):
        layers[i].needs_input_grad = needs_input_grad or i > 0
        layers[i].grads.clear()  # each backward sets its gradients anew: one left unset is caught, not reused
        grad_y = layers[i].backward(grad_y)
    return grad_y


class Residual(Container):
    """``y = block(x) + shortcut(x)``: ``block`` and ``shortcut`` are lists of layers, ``None`` the
    identity. Parameters are named ``"block.<i>.<name>"`` / ``"shortcut.<i>.<name>"``."""

    def __init__(self, block, shortcut=None) -> None:
        super().__init__({"block": self.layer_list(block, "block"),
                          "shortcut": [] if shortcut is None else self.layer_list(shortcut, "shortcut")})
        self.block, self.shortcut = self.branches["block"], self.branches["shortcut"]

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        out, other = self.branch_shape("block", input_shape), self.branch_shape("shortcut", input_shape)
        if out != other:
            raise ShapeError(f"Residual: block output {out} and shortcut output {other} differ for input "
                             f"{input_shape}; add a shortcut (e.g. a 1x1 Conv2D with the block's stride) that matches")
        return out

    def get_config(self):
        return {"block": [describe(layer) for layer in self.block],
                "shortcut": [describe(layer) for layer in self.shortcut] if self.shortcut else None}

    @classmethod
    def from_config(cls, config):
        return cls(layers_from_config(config.get("block"), "block"),
                   None if config.get("shortcut") is None else layers_from_config(config["shortcut"], "shortcut"))

    def forward(self, x, training=False):
        return run_forward(self.chains["block"], x, training) + run_forward(self.chains["shortcut"], x, training)

    def backward(self, grad_y):
        block = run_backward(self.chains["block"], grad_y, self.needs_input_grad)
        shortcut = run_backward(self.chains["shortcut"], grad_y, self.needs_input_grad)
        return block + shortcut if self.needs_input_grad else None

    def __repr__(self) -> str:
        return f"Residual(block={self.block!r}, shortcut={self.shortcut or None!r})"


def run_traced(stack: list[Layer], prefix: str, x, shape: tuple[int, ...]):
    """``x`` (N, *shape) through the built ``stack`` at inference, for a lazy array library whose
    arrays are graph nodes with a symbolic batch (ndonnx): the layers without fused forms, each
    output's shape restated with a reshape (ndonnx forgets a matmul result's static sizes once one
    is symbolic). ExportError names a layer that needs the batch size as a number."""
    for i, layer in enumerate(stack):
        path = f"{prefix}{i}"
        try:
            y = (run_traced(layer.block, f"{path}.block.", x, shape) +
                 run_traced(layer.shortcut, f"{path}.shortcut.", x, shape)
                 if type(layer) is Residual else layer.forward(x, training=False))
        except ExportError:
            raise
        except (TypeError, ValueError, IndexError) as e:  # what a size that is not a number raises
            raise ExportError(f"layer {path} ({type(layer).__name__}): cannot be traced through ndonnx with a symbolic "
                              f"batch ({type(e).__name__}: {e}); export with method='hand'") from None
        shape = tuple(layer.output_shape(shape))
        x = namespace_of(y).reshape(y, (-1, *shape))
    return x
