"""Canonization for LRP: graph transforms that keep a model's function but give every layer a
form the relevance rules are defined on (as zennit's and Captum's canonizers do).

    folded, names = fold_batchnorm(model.proto)   # Conv -> BatchNormalization as one Conv
    model = canonized(model)                      # the same, as a Model (cached per model)

Folding (inference BatchNormalization, per output channel c): with
``s = scale / sqrt(var + epsilon)``, ``W'[c] = W[c] * s[c]`` and
``b'[c] = (b[c] - mean[c]) * s[c] + B[c]``; the Conv then writes the BatchNormalization's output
tensor, so downstream names do not change. A Conv whose output something else also reads, or
that is a graph output, is left as it is.
"""

from __future__ import annotations

import weakref

import numpy as np
import onnx
from onnx import numpy_helper

from . import graph
from .model import Model

#: model -> its canonized twin (None: nothing to fold, the model itself)
_canonized: weakref.WeakKeyDictionary[Model, Model | None] = weakref.WeakKeyDictionary()


def fold_batchnorm(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``proto`` with each Conv -> BatchNormalization (inference mode, constant
    parameters, the Conv's output read by the BatchNormalization alone) folded into the Conv.

    Returns:
        (the new model, the output tensor names of the folded BatchNormalization nodes).
    """
    folded_proto = onnx.ModelProto()
    folded_proto.CopyFrom(proto)
    g = folded_proto.graph
    constants = graph.initializers(folded_proto)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in g.output}
    producer = {o: node for node in g.node for o in node.output}
    removed: list[onnx.NodeProto] = []
    folded: list[str] = []
    for bn in list(g.node):
        if bn.op_type != "BatchNormalization" or graph.attributes(bn).get("training_mode", 0):
            continue
        conv = producer.get(bn.input[0])
        params = [constants.get(name) for name in bn.input[1:5]]
        if (
            conv is None
            or conv.op_type != "Conv"
            or len(readers.get(bn.input[0], [])) != 1
            or bn.input[0] in outputs
            or any(p is None for p in params)
            or conv.input[1] not in constants
            or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in constants)
            or any(o for o in bn.output[1:])
        ):
            continue
        weight = constants[conv.input[1]]
        scale, shift, mean, var = (np.asarray(p, np.float64) for p in params)
        factor = scale / np.sqrt(var + graph.attributes(bn).get("epsilon", 1e-5))
        bias = (
            np.asarray(constants[conv.input[2]], np.float64)
            if len(conv.input) > 2 and conv.input[2]
            else np.zeros(weight.shape[0])
        )
        new_weight = weight.astype(np.float64) * factor.reshape(-1, *[1] * (weight.ndim - 1))
        new_bias = (bias - mean) * factor + shift
        base = bn.output[0]
        names = (f"{base}__folded_weight", f"{base}__folded_bias")
        g.initializer.extend(
            [
                numpy_helper.from_array(new_weight.astype(weight.dtype), names[0]),
                numpy_helper.from_array(new_bias.astype(weight.dtype), names[1]),
            ]
        )
        old_output = conv.output[0]
        conv.input[1] = names[0]
        if len(conv.input) > 2:
            conv.input[2] = names[1]
        else:
            conv.input.append(names[1])
        conv.output[0] = base
        removed.append(bn)
        kept_info = [v for v in g.value_info if v.name != old_output]
        del g.value_info[:]
        g.value_info.extend(kept_info)
        folded.append(base)
    for bn in removed:
        g.node.remove(bn)
    used = {name for node in g.node for name in node.input}
    kept = [init for init in g.initializer if init.name in used or init.name in outputs]
    del g.initializer[:]
    g.initializer.extend(kept)
    return folded_proto, folded


def canonized(model: Model) -> Model:
    """``model`` with its BatchNormalization folded into the preceding Conv layers (itself
    when there is none to fold), with the same preprocessing, labels, device and budgets;
    cached while ``model`` lives."""
    if model in _canonized:
        return _canonized[model] or model
    proto, folded = fold_batchnorm(model.proto)
    result = None
    if folded:
        result = Model(
            proto.SerializeToString(),
            preprocess=model.preprocess,
            labels=model.labels,
            device=model.device,
            memory_budget=model.memory_budget,
            threads=model.threads,
            name=model.name,
        )
    _canonized[model] = result
    return result or model


__all__ = ["canonized", "fold_batchnorm"]
