"""MediaPipe's BlazePose landmark model as a torch ``nn.Module``, built from the shipped ``.tflite`` at load time.

:class:`BlazePoseTorch` is the network of ``pose_landmark_full.tflite`` (the file that
:class:`rmpe.pipeline.models.BlazePoseModel` runs with LiteRT) rebuilt in torch: batched, on any device, in any
float dtype, exportable with ``torch.export`` and differentiable. :class:`BlazePoseTorchModel` is the
pipeline adapter over it (the same adapter attributes as :class:`~rmpe.pipeline.models.BlazePoseModel`).

The conversion (nothing converted is shipped: the module is built from the ``.tflite`` each time)
-------------------------------------------------------------------------------------------------
* **Parsing.** The flatbuffer is read with the ``tflite`` package (generated flatbuffer accessors for
  TFLite's schema; no TensorFlow). The model is one subgraph of 332 builtin operators: 192
  ``DEQUANTIZE``, 58 ``CONV_2D``, 38 ``DEPTHWISE_CONV_2D``, 28 ``ADD``, 5 ``PAD``, 5
  ``RESIZE_BILINEAR``, 3 ``RESHAPE``, 2 ``MAX_POOL_2D``, 1 ``LOGISTIC``. :func:`parse_tflite` turns it
  into a plain description (tensors, constant data, operators with their options); :class:`TFLiteModule`
  turns each operator into torch ops, in the file's (topological) order. An operator or option it does
  not know raises ``NotImplementedError`` naming it: nothing is guessed.
* **Weights.** Every weight and bias is stored as float16 and turned into float32 by a ``DEQUANTIZE``
  operator: the converter evaluates those at load time (``float16 -> float32`` is exact), so the module's
  float32 parameters hold exactly the values LiteRT computes with; ``.half()`` gives back the original
  float16 values, losslessly. 3.17 M parameters (6.3 MB as float16), as ``nn.Parameter`` s of the
  operator modules (``net.ops.op<index>_<kind>.weight/bias``, the index being the TFLite operator's), so
  ``.to(device)``, ``.to(dtype)`` and ``requires_grad`` act on them as on any module.
* **Layouts.** TFLite is NHWC; the module is NCHW: the input is ``[N, 3, 256, 256]`` (a ``[N, 256, 256,
  3]`` tensor is taken as channels-last and permuted), every 4-D activation is NCHW (held in torch's
  channels-last memory format unless ``channels_last=False``). ``CONV_2D`` weights
  ``[O, kh, kw, I]`` become ``[O, I, kh, kw]``; ``DEPTHWISE_CONV_2D`` weights ``[1, kh, kw, C*m]`` become
  ``[C*m, 1, kh, kw]`` with ``groups = C`` (TFLite's output channel ``c*m + j`` reads input channel ``c``,
  as torch's grouped convolution). ``PAD``'s NHWC paddings are reordered for ``F.pad``; ``RESHAPE`` of a
  4-D activation goes through NHWC (so the flattening order is TFLite's) and takes dimension 0 as the
  batch (``-1``), so any batch works.
* **Padding.** ``VALID`` is no padding. ``SAME`` is TensorFlow's: ``total = max((ceil(n / s) - 1) s +
  (k - 1) d + 1 - n, 0)``, ``total // 2`` before and the rest after, so at stride 2 on an even size the
  extra row/column is at the bottom/right (uneven; ``F.pad`` then an unpadded convolution); the symmetric
  cases use the convolution's own padding. ``MAX_POOL_2D`` with ``SAME`` pads with ``-inf``.
* **Activations.** Fused activations (``NONE``, ``RELU``, ``RELU6``, ``RELU_N1_TO_1``, ``TANH``; this model
  uses ``RELU6`` and ``NONE``) are applied after the convolution / addition; ``LOGISTIC`` is a sigmoid.
* **Resize.** All five ``RESIZE_BILINEAR`` have ``half_pixel_centers = True``, ``align_corners = False``:
  source coordinate ``(dst + 0.5) * in / out - 0.5`` clamped to the image, which is ``F.interpolate(...,
  mode="bilinear", align_corners=False)``. ``align_corners = True`` maps to ``align_corners=True``; TF's
  legacy mode (both false) is refused.
* **Pruning.** Only the operators the requested outputs depend on are built and run (the module for
  ``outputs=("heatmap",)`` has no segmentation or regression head at all).
* **Rewrites that change no value.** A ``PAD`` whose only reader is a ``VALID`` convolution becomes that
  convolution's zero padding (all five here); activations are applied in place on fresh tensors, and
  without autograd an ``ADD`` writes into an operand nothing reads afterwards (less memory traffic).

Agreement with LiteRT (ai-edge-litert 2.3.0, its default XNNPACK CPU path, on the crops of the 8
best-scored boxes of ``data/coco4``; see ``tests/rmpe/test_blazepose_torch.py``): heatmap logits (from -80
to 3) within 2.8e-4, the same argmax on all 312 joints, landmark x, y within 4.7e-4 crop pixels. LiteRT's
own two CPU paths (XNNPACK and its builtin kernels) differ by more on the same crops (3.8e-4 on the
logits, 6.6e-4 px on the landmarks).

The outputs (:class:`BlazePoseTorch`; names by the TFLite outputs' shapes):

=================== ======================= ====================================================
``landmarks``       ``[N, 39, 5]``          x, y (crop pixels), z, visibility and presence logits
``pose_flag``       ``[N, 1]``              probability that a person is in the crop (a sigmoid)
``segmentation``    ``[N, 1, 256, 256]``    person mask logits
``heatmap``         ``[N, 39, 64, 64]``     heatmap logits (cell ``(u, v)`` covers crop pixels ``[4u, 4u + 4)``)
``world_landmarks`` ``[N, 39, 3]``          3-D world landmarks (the raw output MediaPipe reads them from)
=================== ======================= ====================================================

Needs the ``tflite`` package (``pip install tflite``; tested with 2.18.0) to read the file; the module then
needs only torch. Timing against LiteRT: ``tools/bench_blazepose_torch.py``.
The model is Apache-2.0 (``rmpe/data/models/blazepose/LICENSE``, shipped with it).
"""
from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .blazepose import BLAZEPOSE_TO_COCO, default_blazepose_path

__all__ = ["BlazePoseTorch", "BlazePoseTorchModel", "TFLiteModule", "TFLiteGraph", "parse_tflite",
           "BLAZEPOSE_OUTPUTS"]

# the BlazePose outputs, named by their TFLite shapes (batch dimension left out)
BLAZEPOSE_OUTPUTS = {
    "landmarks": (195,),
    "pose_flag": (1,),
    "segmentation": (256, 256, 1),
    "heatmap": (64, 64, 39),
    "world_landmarks": (117,),
}
_DEFAULT_OUTPUTS = ("landmarks", "pose_flag", "heatmap", "world_landmarks")

_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}


def _tflite():
    try:
        import tflite
    except ImportError as e:
        raise ImportError("building BlazePoseTorch needs the `tflite` package (a flatbuffer parser of .tflite "
                          "files, no TensorFlow): pip install tflite") from e
    return tflite


# ------------------------------------------------------------------------------------------- parsing


@dataclass
class TFLiteOp:
    """One operator: its builtin name, tensor indices in/out (-1: an omitted optional input), options."""

    index: int
    kind: str
    inputs: List[int]
    outputs: List[int]
    options: Dict[str, object] = field(default_factory=dict)


@dataclass
class TFLiteGraph:
    """A TFLite subgraph as plain data: tensor names and shapes, constants (float32 after dequantization,
    int32 shapes and paddings), operators in execution order, the graph's input and output tensors."""

    names: List[str]
    shapes: List[Tuple[int, ...]]
    consts: Dict[int, np.ndarray]
    ops: List[TFLiteOp]
    inputs: List[int]
    outputs: List[int]


def _opts(tfl, op, cls_name):
    table = op.BuiltinOptions()
    if table is None:
        return None
    opt = getattr(tfl, cls_name)()
    opt.Init(table.Bytes, table.Pos)
    return opt


def parse_tflite(path: Union[str, os.PathLike]) -> TFLiteGraph:
    """Reads subgraph 0 of a ``.tflite`` file with the ``tflite`` package. ``DEQUANTIZE`` of a float16
    constant is folded into a float32 constant (exact); other constants keep their type. Raises
    NotImplementedError naming an operator, option or tensor type it does not handle."""
    tfl = _tflite()
    buf = pathlib.Path(path).read_bytes()
    model = tfl.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() != 1:
        raise NotImplementedError(f"{path}: {model.SubgraphsLength()} subgraphs; only single-subgraph models")
    g = model.Subgraphs(0)
    opnames = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
    np_types = {tfl.TensorType.FLOAT32: np.float32, tfl.TensorType.FLOAT16: np.float16,
                tfl.TensorType.INT32: np.int32, tfl.TensorType.INT64: np.int64}

    names, shapes, consts = [], [], {}
    for t in range(g.TensorsLength()):
        T = g.Tensors(t)
        names.append(T.Name().decode())
        shapes.append(tuple(int(s) for s in T.ShapeAsNumpy()) if T.ShapeLength() else ())
        b = model.Buffers(T.Buffer())
        if b is None:
            continue
        if b.DataLength() > 0:
            raw = b.DataAsNumpy().tobytes()
        elif b.Offset() > 1:  # large models keep their buffers after the flatbuffer
            raw = buf[b.Offset():b.Offset() + b.Size()]
        else:
            continue
        if T.Type() not in np_types:
            raise NotImplementedError(f"{path}: constant tensor {names[-1]!r} has TFLite type {T.Type()}")
        if T.Quantization() is not None and T.Quantization().ScaleLength():
            raise NotImplementedError(f"{path}: quantized constant tensor {names[-1]!r}")
        consts[t] = np.frombuffer(raw, np_types[T.Type()]).reshape(shapes[-1]).copy()

    ops = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = opnames.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        ins = [int(t) for t in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(t) for t in op.OutputsAsNumpy()]
        o = TFLiteOp(i, kind, ins, outs)
        if kind == "DEQUANTIZE":
            src = ins[0]
            if src not in consts or consts[src].dtype != np.float16:
                raise NotImplementedError(f"{path}: operator {i} DEQUANTIZE of a non-float16 or non-constant tensor")
            consts[outs[0]] = consts[src].astype(np.float32)  # exact
            continue  # folded
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            opt = _opts(tfl, op, "Conv2DOptions" if kind == "CONV_2D" else "DepthwiseConv2DOptions")
            o.options = dict(padding=opt.Padding(), stride=(opt.StrideH(), opt.StrideW()),
                             dilation=(opt.DilationHFactor(), opt.DilationWFactor()),
                             act=opt.FusedActivationFunction())
            if kind == "DEPTHWISE_CONV_2D":
                o.options["depth_multiplier"] = opt.DepthMultiplier()
        elif kind == "ADD":
            opt = _opts(tfl, op, "AddOptions")
            o.options = dict(act=opt.FusedActivationFunction() if opt is not None else 0)
        elif kind == "MAX_POOL_2D":
            opt = _opts(tfl, op, "Pool2DOptions")
            o.options = dict(padding=opt.Padding(), stride=(opt.StrideH(), opt.StrideW()),
                             kernel=(opt.FilterHeight(), opt.FilterWidth()), act=opt.FusedActivationFunction())
        elif kind == "RESIZE_BILINEAR":
            opt = _opts(tfl, op, "ResizeBilinearOptions")
            o.options = dict(align_corners=bool(opt.AlignCorners()), half_pixel_centers=bool(opt.HalfPixelCenters()))
        elif kind in ("PAD", "RESHAPE", "LOGISTIC"):
            pass
        else:
            raise NotImplementedError(f"{path}: operator {i} is {kind}, which this converter does not handle")
        ops.append(o)
    return TFLiteGraph(names, shapes, consts, ops, [int(t) for t in g.InputsAsNumpy()],
                       [int(t) for t in g.OutputsAsNumpy()])


# ------------------------------------------------------------------------------------------- operators


def _activation(x: torch.Tensor, act: int, inplace: bool = False) -> torch.Tensor:
    """A TFLite fused activation; ``inplace`` on a fresh tensor (these activations' gradients are computed
    from their output, so autograd allows it)."""
    if act == 0:
        return x
    if act == 1:
        return F.relu(x, inplace=inplace)
    if act == 2:
        return F.hardtanh(x, -1.0, 1.0, inplace=inplace)
    if act == 3:
        return F.relu6(x, inplace=inplace)
    return x.tanh_() if inplace else torch.tanh(x)  # 4, checked at build time


def _check_act(op: TFLiteOp) -> int:
    act = int(op.options.get("act", 0))
    if act not in _ACTIVATIONS:
        raise NotImplementedError(f"operator {op.index} {op.kind}: fused activation {act} is not handled")
    return act


def _same_pads(size: int, k: int, s: int, d: int) -> Tuple[int, int]:
    """TensorFlow's SAME padding of one spatial dimension: (before, after); the odd pixel goes after."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


class _Conv(nn.Module):
    """CONV_2D / DEPTHWISE_CONV_2D: TF's SAME padding or ``pads`` (a folded PAD's zeros, (top, bottom, left,
    right)), the convolution, then the fused activation."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], stride, dilation, same: bool,
                 groups: int, act: int, pads: Tuple[int, int, int, int] = (0, 0, 0, 0)):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.stride, self.dilation = tuple(stride), tuple(dilation)
        self.same, self.groups, self.act, self.pads = same, groups, act, tuple(pads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            t, b = _same_pads(x.shape[2], self.weight.shape[2], self.stride[0], self.dilation[0])
            l, r = _same_pads(x.shape[3], self.weight.shape[3], self.stride[1], self.dilation[1])
        else:
            t, b, l, r = self.pads
        if t == b and l == r:
            pad = (t, l)
        else:  # uneven (SAME at stride 2 on an even size: the extra row/column at the bottom/right)
            x, pad = F.pad(x, (l, r, t, b)), (0, 0)
        y = F.conv2d(x, self.weight, self.bias, self.stride, pad, self.dilation, self.groups)
        return _activation(y, self.act, inplace=True)

    def extra_repr(self) -> str:
        padding = "SAME" if self.same else f"VALID, pads={self.pads}" if any(self.pads) else "VALID"
        return (f"{tuple(self.weight.shape)}, stride={self.stride}, padding={padding}, groups={self.groups}, "
                f"act={_ACTIVATIONS[self.act]}")


class _Add(nn.Module):
    """ADD of two activations, then the fused activation. ``reuse``: which operand (0 or 1; -1: none) is
    dead after this operator, so that without autograd the sum is written into it."""

    def __init__(self, act: int):
        super().__init__()
        self.act, self.reuse = act, -1

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.reuse >= 0 and not (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)) \
                and a.shape == b.shape:
            y = a.add_(b) if self.reuse == 0 else b.add_(a)
        else:
            y = a + b
        return _activation(y, self.act, inplace=True)

    def extra_repr(self) -> str:
        return f"act={_ACTIVATIONS[self.act]}"


class _Pad(nn.Module):
    def __init__(self, pads: Tuple[int, ...]):
        super().__init__()
        self.pads = pads  # F.pad order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads)

    def extra_repr(self) -> str:
        return f"pads={self.pads}"


class _MaxPool(nn.Module):
    def __init__(self, kernel, stride, same: bool, act: int):
        super().__init__()
        self.kernel, self.stride, self.same, self.act = tuple(kernel), tuple(stride), same, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            ph = _same_pads(x.shape[2], self.kernel[0], self.stride[0], 1)
            pw = _same_pads(x.shape[3], self.kernel[1], self.stride[1], 1)
            if ph != (0, 0) or pw != (0, 0):
                x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=float("-inf"))
        return _activation(F.max_pool2d(x, self.kernel, self.stride), self.act, inplace=True)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, padding={'SAME' if self.same else 'VALID'}"


class _Resize(nn.Module):
    def __init__(self, size: Tuple[int, int], align_corners: bool):
        super().__init__()
        self.size, self.align_corners = size, align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=self.align_corners)

    def extra_repr(self) -> str:
        return f"size={self.size}, align_corners={self.align_corners}"


class _Reshape(nn.Module):
    """RESHAPE in TFLite's (NHWC) element order; dimension 0 is the batch."""

    def __init__(self, shape: Tuple[int, ...]):
        super().__init__()
        self.shape = (-1,) + tuple(shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        y = x.reshape(self.shape)
        return y.permute(0, 3, 1, 2) if y.dim() == 4 else y

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class _Logistic(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


# ------------------------------------------------------------------------------------------- the graph


class TFLiteModule(nn.Module):
    """A TFLite graph (:func:`parse_tflite`) as a torch module: one NCHW input, the requested output
    tensors (TFLite tensor indices, default all the graph's outputs) in that order, 4-D ones NCHW.

    Only the operators those outputs depend on are built (``self.ops``, a ModuleDict keyed
    ``"op<operator index>_<kind>"``, e.g. ``op003_conv_2d``) and run, in the file's order; intermediate
    values are dropped after their last use. Two rewrites that change no value: a ``PAD`` (zeros,
    spatial) whose only reader is a ``VALID`` convolution becomes that convolution's padding, and without
    autograd an ``ADD`` writes into an operand that nothing reads afterwards."""

    def __init__(self, graph: TFLiteGraph, outputs: Optional[Sequence[int]] = None):
        super().__init__()
        if len(graph.inputs) != 1:
            raise NotImplementedError(f"graphs with {len(graph.inputs)} inputs are not handled (one only)")
        outputs = list(graph.outputs if outputs is None else outputs)
        ops = self._fold_pads(graph, outputs)
        producer = {t: op for op in ops for t in op.outputs}
        for t in outputs:
            if t not in producer and t != graph.inputs[0]:
                raise ValueError(f"tensor {t} ({graph.names[t] if 0 <= t < len(graph.names) else '?'}) is not "
                                 "computed by the graph")
        # the operators the outputs need (the graph is topologically ordered)
        need, stack = set(), list(outputs)
        while stack:
            t = stack.pop()
            op = producer.get(t)
            if op is None or op.index in need:
                continue
            need.add(op.index)
            stack.extend(i for i in op.inputs if i >= 0 and i not in graph.consts)
        self.input_tensor, self.output_tensors = graph.inputs[0], outputs
        self.ops = nn.ModuleDict()
        plan = []
        for op in ops:
            if op.index not in need:
                continue
            key = f"op{op.index:03d}_{op.kind.lower()}"
            module, dyn = self._build(graph, op)
            self.ops[key] = module
            plan.append((key, dyn, op.outputs[0]))
        # frees: after step s, drop the values no later step (nor the output) reads
        last = {}
        for s, (_, dyn, _) in enumerate(plan):
            for t in dyn:
                last[t] = s
        keep = set(outputs) | {self.input_tensor}
        # values an ADD may overwrite: not a RESHAPE's output (a view) nor its input (a view of it may live on)
        fresh = {out for key, _, out in plan if not key.endswith("_reshape")} - \
            {dyn[0] for key, dyn, _ in plan if key.endswith("_reshape")}
        self._plan = [(key, tuple(dyn), out, tuple(t for t in set(dyn) if last[t] == s and t not in keep))
                      for s, (key, dyn, out) in enumerate(plan)]
        for s, (key, dyn, _, free) in enumerate(self._plan):
            if isinstance(self.ops[key], _Add) and dyn[0] != dyn[1]:
                ok = [i for i in (0, 1) if dyn[i] in free and dyn[i] in fresh]
                self.ops[key].reuse = ok[0] if ok else -1

    @staticmethod
    def _fold_pads(graph: TFLiteGraph, outputs: Sequence[int]) -> List[TFLiteOp]:
        """The operators, with each PAD that only feeds a VALID convolution folded into it."""
        readers: Dict[int, List[TFLiteOp]] = {}
        for op in graph.ops:
            for t in op.inputs:
                readers.setdefault(t, []).append(op)
        folded, pads = set(), {}
        for op in graph.ops:
            if op.kind != "PAD" or op.outputs[0] in outputs or op.inputs[1] not in graph.consts:
                continue
            r = readers.get(op.outputs[0], [])
            p = graph.consts[op.inputs[1]]
            if len(r) != 1 or r[0].kind not in ("CONV_2D", "DEPTHWISE_CONV_2D") or r[0].options["padding"] != 1 \
                    or r[0].inputs[0] != op.outputs[0] or p.shape != (4, 2) or p[0].any() or p[3].any():
                continue
            folded.add(op.index)
            pads[r[0].index] = (op.inputs[0], tuple(int(v) for v in p[1:3].reshape(-1)))  # (top, bottom, left, right)
        out = []
        for op in graph.ops:
            if op.index in folded:
                continue
            if op.index in pads:
                src, p = pads[op.index]
                op = TFLiteOp(op.index, op.kind, [src] + op.inputs[1:], op.outputs, dict(op.options, pads=p))
            out.append(op)
        return out

    @staticmethod
    def _build(graph: TFLiteGraph, op: TFLiteOp):
        """(module, the op's non-constant input tensors)."""
        c, k = graph.consts, op.kind
        dyn = [i for i in op.inputs if i >= 0 and i not in c]
        where = f"operator {op.index} {k}"
        if k in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            if len(dyn) != 1 or op.inputs[1] not in c:
                raise NotImplementedError(f"{where}: non-constant weights")
            w = torch.from_numpy(c[op.inputs[1]].astype(np.float32))
            b = op.inputs[2] if len(op.inputs) > 2 else -1
            bias = torch.from_numpy(c[b].astype(np.float32)) if b >= 0 else None
            if k == "CONV_2D":
                w, groups = w.permute(0, 3, 1, 2).contiguous(), 1  # [O, kh, kw, I] -> [O, I, kh, kw]
                cin = graph.shapes[dyn[0]][3]
                if cin != w.shape[1]:
                    raise NotImplementedError(f"{where}: grouped convolution ({cin} input channels, weights for "
                                              f"{w.shape[1]})")
            else:
                groups = graph.shapes[dyn[0]][3]  # [1, kh, kw, C*m] -> [C*m, 1, kh, kw]
                w = w.permute(3, 0, 1, 2).contiguous()
                if w.shape[0] % groups:
                    raise NotImplementedError(f"{where}: {w.shape[0]} output channels for {groups} input channels")
            return _Conv(w, bias, op.options["stride"], op.options["dilation"], op.options["padding"] == 0, groups,
                         _check_act(op), op.options.get("pads", (0, 0, 0, 0))), dyn
        if k == "ADD":
            if len(dyn) != 2:
                raise NotImplementedError(f"{where}: addition of a constant")
            return _Add(_check_act(op)), dyn
        if k == "PAD":
            p = c[op.inputs[1]].astype(np.int64)
            if p.shape != (4, 2) or p[0].any():
                raise NotImplementedError(f"{where}: paddings {p.tolist()} (only 4-D, none on the batch)")
            # NHWC rows -> F.pad's (W, H, C) pairs of an NCHW tensor
            return _Pad((int(p[2, 0]), int(p[2, 1]), int(p[1, 0]), int(p[1, 1]), int(p[3, 0]), int(p[3, 1]))), dyn
        if k == "MAX_POOL_2D":
            return _MaxPool(op.options["kernel"], op.options["stride"], op.options["padding"] == 0,
                            _check_act(op)), dyn
        if k == "RESIZE_BILINEAR":
            if not (op.options["half_pixel_centers"] or op.options["align_corners"]):
                raise NotImplementedError(f"{where}: TF's legacy bilinear resize (neither half-pixel centres nor "
                                          "aligned corners)")
            if op.options["half_pixel_centers"] and op.options["align_corners"]:
                raise NotImplementedError(f"{where}: half-pixel centres with aligned corners")
            size = tuple(int(s) for s in c[op.inputs[1]])
            return _Resize(size, op.options["align_corners"]), dyn[:1]
        if k == "RESHAPE":
            shape = tuple(int(s) for s in c[op.inputs[1]]) if len(op.inputs) > 1 and op.inputs[1] in c \
                else graph.shapes[op.outputs[0]]
            if -1 in shape[1:]:
                raise NotImplementedError(f"{where}: shape {shape} (dimension 0 must be the batch)")
            return _Reshape(shape), dyn[:1]
        if k == "LOGISTIC":
            return _Logistic(), dyn
        raise NotImplementedError(f"{where} is not handled")

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        vals = {self.input_tensor: x}
        for key, dyn, out, free in self._plan:
            vals[out] = self.ops[key](*[vals[t] for t in dyn])
            for t in free:
                del vals[t]
        return tuple(vals[t] for t in self.output_tensors)


# ------------------------------------------------------------------------------------------- BlazePose


class BlazePoseTorch(nn.Module):
    """The BlazePose landmark network of ``model_path`` (default :func:`rmpe.pipeline.models.default_blazepose_path`,
    the shipped ``pose_landmark_full.tflite``) in torch; see the module docstring for the conversion.

    ``forward(crops)``: ``[N, 3, 256, 256]`` (or channels-last ``[N, 256, 256, 3]``) RGB in [0, 1], as
    LiteRT takes them (the adapter :class:`BlazePoseTorchModel` feeds ``pixel / 255``, RGB) -> a dict of
    the requested ``outputs`` (of ``landmarks``, ``pose_flag``, ``segmentation``, ``heatmap``,
    ``world_landmarks``; default all but ``segmentation``), in that order. Only what those outputs need is
    built and computed. Crops are cast to the parameters' dtype. ``channels_last``: compute in torch's
    channels-last memory format (on 2 CPU threads about 15% faster than contiguous NCHW; the outputs are
    contiguous either way). Parameters are ordinary (trainable)
    ``nn.Parameter`` s; the module starts in eval mode (it has no train-mode behaviour anyway)."""

    def __init__(self, model_path: Optional[Union[str, os.PathLike]] = None,
                 outputs: Sequence[str] = _DEFAULT_OUTPUTS, channels_last: bool = True):
        super().__init__()
        self.channels_last = bool(channels_last)
        path = pathlib.Path(model_path) if model_path is not None else default_blazepose_path()
        if not path.is_file():
            raise FileNotFoundError(f"BlazePose model file {str(path)!r} does not exist")
        outputs = tuple(outputs)
        bad = [o for o in outputs if o not in BLAZEPOSE_OUTPUTS]
        if bad or not outputs or len(set(outputs)) != len(outputs):
            raise ValueError(f"outputs must be distinct names among {tuple(BLAZEPOSE_OUTPUTS)}, got {outputs}")
        graph = parse_tflite(path)
        if [graph.shapes[i] for i in graph.inputs] != [(1, 256, 256, 3)]:
            raise ValueError(f"BlazePose model file {str(path)!r}: expected one 1x256x256x3 input, got "
                             f"{[graph.shapes[i] for i in graph.inputs]}")
        by_shape = {graph.shapes[t][1:]: t for t in graph.outputs}
        missing = [o for o in outputs if BLAZEPOSE_OUTPUTS[o] not in by_shape]
        if missing or len(by_shape) != len(graph.outputs):
            raise ValueError(f"BlazePose model file {str(path)!r}: no single output for {missing} among "
                             f"{[graph.shapes[t] for t in graph.outputs]}")
        self.model_path, self.outputs = path, outputs
        self.net = TFLiteModule(graph, [by_shape[BLAZEPOSE_OUTPUTS[o]] for o in outputs])
        self.eval()

    def forward(self, crops: torch.Tensor) -> Dict[str, torch.Tensor]:
        if crops.dim() != 4 or (tuple(crops.shape[1:]) != (3, 256, 256) and tuple(crops.shape[1:]) != (256, 256, 3)):
            raise ValueError(f"crops must be [N, 3, 256, 256] (or channels-last [N, 256, 256, 3]), got "
                             f"{tuple(crops.shape)}")
        if crops.shape[1] != 3:
            crops = crops.permute(0, 3, 1, 2)
        w = next(self.parameters())
        crops = crops.to(w.dtype)
        if self.channels_last:
            crops = crops.contiguous(memory_format=torch.channels_last)
        outs = self.net(crops)
        res = {}
        for name, t in zip(self.outputs, outs):
            if name == "landmarks":
                t = t.reshape(-1, 39, 5)
            elif name == "world_landmarks":
                t = t.reshape(-1, 39, 3)
            res[name] = t.contiguous()
        return res

    def extra_repr(self) -> str:
        return f"{str(self.model_path)!r}, outputs={self.outputs}"


class BlazePoseTorchModel:
    """Pipeline adapter: :class:`BlazePoseTorch` (heatmap output only) as an SPPE, ``[N, 3, 256, 256]``
    crops -> ``[N, 39, 64, 64]`` logits, batched, on ``device``. The same adapter attributes as
    :class:`rmpe.pipeline.models.BlazePoseModel` (RGB in [0, 1], the AlphaPose box preset, ``heatmap_offset = 0.5``,
    ``heatmap_activation = "sigmoid"``, the BlazePose -> COCO-17 joint map), so either can serve the
    pipeline. ``dtype``: the crops' and the weights' dtype (float32 by default; float16/bfloat16 for a
    GPU). The module (``self.module``) has its gradients off and runs under ``torch.inference_mode``."""

    input_size = (256, 256)
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)
    channel_order = "RGB"
    num_joints = 39
    joint_map = BLAZEPOSE_TO_COCO
    box_preset = "alphapose"
    heatmap_offset = 0.5
    heatmap_activation = "sigmoid"

    def __init__(self, model_path: Optional[Union[str, os.PathLike]] = None,
                 device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        self.device, self.dtype = torch.device(device), dtype
        self.module = BlazePoseTorch(model_path, outputs=("heatmap",)).to(self.device, dtype).requires_grad_(False)
        self.model_path = self.module.model_path

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        """crops ``[N, 3, 256, 256]`` RGB in [0, 1] -> heatmap logits ``[N, 39, 64, 64]`` (``self.dtype``, on
        ``self.device``)."""
        if not isinstance(crops, torch.Tensor) or crops.dim() != 4 or tuple(crops.shape[1:]) != (3, 256, 256):
            shape = tuple(crops.shape) if isinstance(crops, torch.Tensor) else type(crops).__name__
            raise ValueError(f"crops must be a [N, 3, 256, 256] tensor, got {shape}")
        with torch.inference_mode():
            return self.module(crops.to(self.device, self.dtype))["heatmap"]

    def __repr__(self) -> str:
        return f"BlazePoseTorchModel({str(self.model_path)!r}, device={self.device}, dtype={self.dtype})"
