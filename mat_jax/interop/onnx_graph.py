"""The ONNX graph that `to_onnx` builds: nodes, initialisers and shared constants."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper


def static(dims) -> bool:
    return all(isinstance(d, (int, np.integer)) for d in dims)


def onnx_dtype(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


class Graph:
    """The ONNX nodes and initialisers being built, and what each jaxpr variable is: a
    numpy constant or the name of an ONNX value."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._const_names: dict[int, tuple[np.ndarray, str]] = {}

    def fresh(self, hint: str = "v") -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, **attrs) -> list[str]:
        outs = [self.fresh(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, **attrs))
        return outs

    def op(self, op: str, *inputs: str, **attrs) -> str:
        return self.node(op, inputs, **attrs)[0]

    def const(self, value) -> str:
        value = np.asarray(value)
        key = id(value)
        if key in self._const_names and self._const_names[key][0] is value:
            return self._const_names[key][1]
        name = self.fresh("c")
        self.initializers.append(numpy_helper.from_array(value.copy(order="C"), name))
        self._const_names[key] = (value, name)  # holding `value` keeps its id from being reused
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(list(values), np.int64))
