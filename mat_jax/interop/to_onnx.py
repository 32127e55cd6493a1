"""A jaxpr to an ONNX graph: the converter behind `mat_jax.export --format=onnx`.

Why our own: jax2tf now only emits XlaCallModule ops, which tf2onnx cannot read, and
jax2onnx pins an orbax-checkpoint older than ours, so neither shares our environment. The
inference forward of MAT (and of the stage-1 backbones) uses a few dozen primitives; each
maps onto one to three standard ONNX ops, below.

How:
* The function is traced with `jax.make_jaxpr` on a symbolic batch dimension, so the graph
  takes any batch size. Shapes that hold the batch read it off the first input at run time.
* Every equation whose inputs are all known (the weights, index tables, resize matrices)
  is evaluated here with JAX and becomes a constant: BatchNorm statistics, scales and
  the like are folded before ONNX sees them.
* `jit`, `custom_jvp_call` and `custom_vjp_call` bodies are inlined; a `cond` on
  `platform_index` (the CPU-only paths of `mat_jax.models.grouped`) takes its default
  branch, the native op, which ONNX has.
* Convolutions are NHWC in the jaxpr and NCHW in ONNX: a Transpose on each side, which
  onnxruntime's optimiser cancels between consecutive convolutions.
A primitive with no rule raises `NotImplementedError` naming it.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence

import jax
import numpy as np
import onnx
from jax.extend import core as jcore
from onnx import TensorProto, helper

from mat_jax.interop.onnx_graph import Graph, onnx_dtype, static

OPSET = 18

_UNARY = {
    "neg": "Neg", "exp": "Exp", "log": "Log", "tanh": "Tanh", "logistic": "Sigmoid", "sqrt": "Sqrt",
    "abs": "Abs", "sign": "Sign", "floor": "Floor", "ceil": "Ceil", "erf": "Erf", "not": "Not",
    "sin": "Sin", "cos": "Cos", "round": "Round",
}  # fmt: skip
_BINARY = {
    "add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min", "pow": "Pow",
    "gt": "Greater", "lt": "Less", "ge": "GreaterOrEqual", "le": "LessOrEqual", "eq": "Equal",
    "and": "And", "or": "Or", "rem": "Mod",
}  # fmt: skip
_IDENTITY = {"stop_gradient", "copy", "copy_p", "reduce_precision", "optimization_barrier"}
_INLINE = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
           "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "remat": "jaxpr",
           "checkpoint": "jaxpr"}  # fmt: skip
_REDUCE = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin",
           "reduce_prod": "ReduceProd"}  # fmt: skip


class _Converter:
    def __init__(self, graph: Graph, batch=None, batch_input: str = ""):
        self.g = graph
        self._batch, self._batch_input, self._batch_name = batch, batch_input, None

    def shape(self, dims) -> str:
        """A shape as an int64 tensor; the batch dimension read off the first input at run time."""
        if static(dims):
            return self.g.ints(int(d) for d in dims)
        if self._batch_name is None:
            self._batch_name = self.g.op("Shape", self._batch_input, start=0, end=1)
        parts = []
        for d in dims:
            if isinstance(d, (int, np.integer)):
                parts.append(self.g.ints([d]))
            elif d == self._batch:
                parts.append(self._batch_name)
            else:
                raise NotImplementedError(f"a shape dimension {d} other than the batch")
        return self.g.op("Concat", *parts, axis=0)

    # --- values ---------------------------------------------------------------------------

    def read(self, env: dict, atom):
        if isinstance(atom, jcore.Literal):
            return np.asarray(atom.val, dtype=atom.aval.dtype)
        return env[atom]

    def name(self, value) -> str:
        return self.g.const(value) if isinstance(value, np.ndarray) else value

    # --- jaxprs ---------------------------------------------------------------------------

    def run(self, jaxpr: jcore.Jaxpr, consts: Sequence, args: Sequence) -> list:
        env: dict = {}
        for v, c in zip(jaxpr.constvars, consts):
            env[v] = np.asarray(c)
        for v, a in zip(jaxpr.invars, args):
            env[v] = a
        for eqn in jaxpr.eqns:
            ins = [self.read(env, a) for a in eqn.invars]
            outs = self.equation(eqn, ins)
            for v, o in zip(eqn.outvars, outs):
                if not isinstance(v, jcore.DropVar):
                    env[v] = o
        return [self.read(env, v) for v in jaxpr.outvars]

    def run_closed(self, closed, args: Sequence) -> list:
        return self.run(closed.jaxpr, closed.consts, args)

    def equation(self, eqn, ins: list) -> list:
        prim = eqn.primitive.name
        if prim in _INLINE:
            body = eqn.params[_INLINE[prim]]
            if prim == "custom_vjp_call" and "call_jaxpr" not in eqn.params:
                body = eqn.params["fun_jaxpr"]
            n = len(body.jaxpr.invars) if hasattr(body, "jaxpr") else len(body.invars)
            args = ins[len(ins) - n:]  # custom_jvp/vjp calls may lead with non-operands
            return self.run_closed(body, args) if hasattr(body, "jaxpr") else self.run(body, [], args)
        if prim == "platform_index":
            # No platform of ONNX is named: the default branch (the native op) is taken.
            platforms = list(eqn.params["platforms"])
            if None not in platforms:
                raise NotImplementedError(f"a platform_dependent op with no default branch ({platforms})")
            return [np.asarray(platforms.index(None), np.int32)]
        if prim == "cond":
            index, *operands = ins
            if not isinstance(index, np.ndarray):
                raise NotImplementedError("cond on a value computed from the input (only constant branches)")
            branches = eqn.params["branches"]
            branch = branches[int(np.clip(index, 0, len(branches) - 1))]
            return self.run_closed(branch, operands)
        shapes_static = all(static(v.aval.shape) for v in eqn.outvars)
        if shapes_static and all(isinstance(x, np.ndarray) for x in ins) and prim != "iota":
            outs = eqn.primitive.bind(*ins, **eqn.params)
            outs = outs if eqn.primitive.multiple_results else [outs]
            return [np.asarray(o) for o in outs]
        rule = getattr(self, f"_{prim}", None)
        if prim in _UNARY:
            return [self.g.op(_UNARY[prim], self.name(ins[0]))]
        if prim in _BINARY:
            return [self._binary(_BINARY[prim], ins, eqn)]
        if prim in _IDENTITY:
            return list(ins)
        if prim in _REDUCE:
            axes = self.g.ints(eqn.params["axes"])
            return [self.g.op(_REDUCE[prim], self.name(ins[0]), axes, keepdims=0)]
        if rule is None:
            raise NotImplementedError(f"no ONNX rule for the JAX primitive {prim!r} ({eqn})")
        out = rule(eqn, ins)
        return out if isinstance(out, list) else [out]

    # --- rules ----------------------------------------------------------------------------

    def _cast_literal(self, value, dtype):
        return np.asarray(value, dtype) if isinstance(value, np.ndarray) else value

    def _binary(self, op: str, ins, eqn) -> str:
        dtype = eqn.invars[0].aval.dtype
        a, b = (self.name(self._cast_literal(x, dtype)) for x in ins)
        if op == "Mod" and np.issubdtype(dtype, np.floating):
            return self.g.op("Mod", a, b, fmod=1)  # lax.rem is C fmod: the sign of the dividend
        if op == "Div" and np.issubdtype(dtype, np.integer):
            raise NotImplementedError("integer division (lax rounds toward zero, ONNX floors)")
        return self.g.op(op, a, b)

    def _ne(self, eqn, ins):
        return self.g.op("Not", self._binary("Equal", ins, eqn))

    def _square(self, eqn, ins):
        x = self.name(ins[0])
        return self.g.op("Mul", x, x)

    def _rsqrt(self, eqn, ins):
        return self.g.op("Reciprocal", self.g.op("Sqrt", self.name(ins[0])))

    def _expm1(self, eqn, ins):
        one = self.g.const(np.asarray(1, eqn.outvars[0].aval.dtype))
        return self.g.op("Sub", self.g.op("Exp", self.name(ins[0])), one)

    def _log1p(self, eqn, ins):
        one = self.g.const(np.asarray(1, eqn.outvars[0].aval.dtype))
        return self.g.op("Log", self.g.op("Add", self.name(ins[0]), one))

    def _integer_pow(self, eqn, ins):
        y = eqn.params["y"]
        exponent = self.g.const(np.asarray(y, eqn.outvars[0].aval.dtype))
        return self.g.op("Pow", self.name(ins[0]), exponent)

    def _convert_element_type(self, eqn, ins):
        new = eqn.params["new_dtype"]
        if np.dtype(new) == np.dtype(eqn.invars[0].aval.dtype):
            return ins[0]
        return self.g.op("Cast", self.name(ins[0]), to=onnx_dtype(new))

    def _select_n(self, eqn, ins):
        which, *cases = ins
        if len(cases) != 2:
            raise NotImplementedError("select_n with more than two cases")
        pred = self.name(which)
        if eqn.invars[0].aval.dtype != np.bool_:
            pred = self.g.op("Cast", pred, to=TensorProto.BOOL)
        return self.g.op("Where", pred, self.name(cases[1]), self.name(cases[0]))

    def _clamp(self, eqn, ins):
        lo, x, hi = ins
        return self.g.op("Min", self.g.op("Max", self.name(x), self.name(lo)), self.name(hi))

    def _reshape(self, eqn, ins):
        if eqn.params.get("dimensions") is not None:
            raise NotImplementedError("reshape with a dimension order")
        return self.g.op("Reshape", self.name(ins[0]), self.shape(eqn.params["new_sizes"]))

    def _squeeze(self, eqn, ins):
        return self.g.op("Squeeze", self.name(ins[0]), self.g.ints(eqn.params["dimensions"]))

    def _expand_dims(self, eqn, ins):
        return self.g.op("Unsqueeze", self.name(ins[0]), self.g.ints(eqn.params["dimensions"]))

    def _broadcast_in_dim(self, eqn, ins):
        shape, kept = eqn.params["shape"], eqn.params["broadcast_dimensions"]
        in_shape = eqn.invars[0].aval.shape
        full = [1] * len(shape)
        for axis, d in zip(kept, in_shape):
            full[axis] = d
        x = ins[0]
        if isinstance(x, np.ndarray):
            x = self.g.const(x.reshape(full))
        elif list(map(str, full)) != list(map(str, in_shape)):
            x = self.g.op("Reshape", x, self.shape(full))
        if list(map(str, full)) == list(map(str, shape)):
            return x
        return self.g.op("Expand", x, self.shape(shape))

    def _transpose(self, eqn, ins):
        return self.g.op("Transpose", self.name(ins[0]), perm=list(eqn.params["permutation"]))

    def _concatenate(self, eqn, ins):
        dtype = eqn.outvars[0].aval.dtype
        return self.g.op("Concat", *(self.name(self._cast_literal(x, dtype)) for x in ins),
                         axis=int(eqn.params["dimension"]))  # fmt: skip

    def _pad(self, eqn, ins):
        x, value = ins
        config = eqn.params["padding_config"]
        if any(interior for _, _, interior in config):
            raise NotImplementedError("pad with interior padding")
        pads = [lo for lo, _, _ in config] + [hi for _, hi, _ in config]
        value = np.asarray(value, eqn.invars[0].aval.dtype)
        return self.g.op("Pad", self.name(x), self.g.ints(pads), self.g.const(value))

    def _slice(self, eqn, ins):
        starts, limits = eqn.params["start_indices"], eqn.params["limit_indices"]
        strides = eqn.params["strides"] or (1,) * len(starts)
        shape = eqn.invars[0].aval.shape
        ends = [int(e) if isinstance(e, (int, np.integer)) else np.iinfo(np.int64).max for e in limits]
        axes = [i for i, (s, e, d) in enumerate(zip(starts, limits, shape)) if not (s == 0 and e is d)]
        return self.g.op("Slice", self.name(ins[0]), self.g.ints(starts[i] for i in axes),
                         self.g.ints(ends[i] for i in axes), self.g.ints(axes), self.g.ints(strides[i] for i in axes))

    def _dot_general(self, eqn, ins):
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        a, b = eqn.invars
        letters = iter(string.ascii_letters)
        la = [next(letters) for _ in a.aval.shape]
        ra = [None] * len(b.aval.shape)
        for i, j in zip(lc, rc):
            ra[j] = la[i]
        for i, j in zip(lb, rb):
            ra[j] = la[i]
        ra = [r or next(letters) for r in ra]
        out = [la[i] for i in lb] + [la[i] for i in range(len(la)) if i not in lc and i not in lb]
        out += [ra[j] for j in range(len(ra)) if j not in rc and j not in rb]
        equation = f"{''.join(la)},{''.join(ra)}->{''.join(out)}"
        dtype = eqn.outvars[0].aval.dtype
        x, y = (self.name(self._cast_literal(v, a.aval.dtype)) for v in ins)
        result = self.g.op("Einsum", x, y, equation=equation)
        if np.dtype(dtype) != np.dtype(a.aval.dtype):
            result = self.g.op("Cast", result, to=onnx_dtype(dtype))
        return result

    def _conv_general_dilated(self, eqn, ins):
        p = eqn.params
        if any(d != 1 for d in p["lhs_dilation"]):
            raise NotImplementedError("a transposed convolution (lhs_dilation)")
        if p["batch_group_count"] != 1:
            raise NotImplementedError("a convolution with batch_group_count")
        lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
        x, w = ins
        x = self.g.op("Transpose", self.name(x), perm=list(lhs_spec))
        if isinstance(w, np.ndarray):
            w = self.g.const(np.transpose(w, rhs_spec))
        else:
            w = self.g.op("Transpose", w, perm=list(rhs_spec))
        pads = [lo for lo, _ in p["padding"]] + [hi for _, hi in p["padding"]]
        y = self.g.op("Conv", x, w, strides=list(p["window_strides"]), pads=pads,
                      dilations=list(p["rhs_dilation"]), group=int(p["feature_group_count"]))  # fmt: skip
        back = [0] * len(out_spec)
        for i, axis in enumerate(out_spec):
            back[axis] = i
        return self.g.op("Transpose", y, perm=back)

    def _gather(self, eqn, ins):
        """`x[..., idx, ...]` with one axis indexed by a list (what `jnp.take` emits)."""
        x, idx = ins
        dn = eqn.params["dimension_numbers"]
        operand = eqn.invars[0].aval.shape
        if not isinstance(idx, np.ndarray) or len(dn.start_index_map) != 1 or tuple(dn.collapsed_slice_dims) != tuple(
            dn.start_index_map
        ):
            raise NotImplementedError(f"a general gather ({dn})")
        axis = dn.start_index_map[0]
        sizes = eqn.params["slice_sizes"]
        if any(s != d for i, (s, d) in enumerate(zip(sizes, operand)) if i != axis):
            raise NotImplementedError("a gather of partial slices")
        index = np.asarray(idx)[..., 0].astype(np.int64)
        out = self.g.op("Gather", self.name(x), self.g.const(index), axis=int(axis))
        want = tuple(eqn.outvars[0].aval.shape)
        got = operand[:axis] + index.shape + operand[axis + 1:]
        if tuple(map(str, want)) != tuple(map(str, got)):
            raise NotImplementedError(f"a gather whose output layout {want} is not x.take(axis={axis}) {got}")
        return out

    def _argmax(self, eqn, ins):
        (axis,) = eqn.params["axes"]
        out = self.g.op("ArgMax", self.name(ins[0]), axis=int(axis), keepdims=0)
        dtype = eqn.params["index_dtype"]
        return out if np.dtype(dtype) == np.int64 else self.g.op("Cast", out, to=onnx_dtype(dtype))

    def _iota(self, eqn, ins):
        p = eqn.params
        if not static(p["shape"]):
            raise NotImplementedError("iota of a batch-dependent shape")
        shape = tuple(p["shape"])
        ramp = np.arange(shape[p["dimension"]], dtype=p["dtype"])
        view = [1] * len(shape)
        view[p["dimension"]] = shape[p["dimension"]]
        return np.broadcast_to(ramp.reshape(view), shape).copy()


def convert(
    fn: Callable,
    consts: Sequence,
    inputs: Sequence[jax.ShapeDtypeStruct],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    batch: str = "batch",
    metadata: dict[str, str] | None = None,
    doc: str = "",
) -> onnx.ModelProto:
    """`fn(consts, *inputs)` as an ONNX model.

    `consts`: a pytree of arrays baked into the graph (the model's variables); `inputs`: one
    ShapeDtypeStruct per graph input, whose leading dimension may be `batch` (made
    symbolic here); `fn` returns a tuple of arrays named by `output_names`.
    """
    (b,) = jax.export.symbolic_shape(batch)
    specs = [
        jax.ShapeDtypeStruct(tuple(b if d == batch else d for d in s.shape), s.dtype) for s in inputs
    ]
    closed = jax.make_jaxpr(fn)(consts, *specs)
    leaves = jax.tree.leaves(consts)
    graph = Graph()
    conv = _Converter(graph, b, input_names[0])
    args = [np.asarray(x) for x in leaves] + list(input_names)
    outs = conv.run_closed(closed, args)
    if len(outs) != len(output_names):
        raise ValueError(f"the function returned {len(outs)} arrays for {len(output_names)} output names")
    for value, name in zip(outs, output_names):
        graph.nodes.append(helper.make_node("Identity", [conv.name(value)], [name]))

    def info(name, aval):
        dims = [batch if not isinstance(d, (int, np.integer)) else int(d) for d in aval.shape]
        return helper.make_tensor_value_info(name, onnx_dtype(aval.dtype), dims)

    graph_proto = helper.make_graph(
        graph.nodes,
        "mat_jax",
        [info(n, s) for n, s in zip(input_names, closed.in_avals[len(leaves):])],
        [info(n, v.aval) for n, v in zip(output_names, closed.jaxpr.outvars)],
        initializer=graph.initializers,
    )
    model = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mat_jax", doc_string=doc)  # fmt: skip
    model.ir_version = 9  # onnxruntime >= 1.16 reads it; newer IRs lock out older runtimes
    for k, v in (metadata or {}).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model)
    return model
