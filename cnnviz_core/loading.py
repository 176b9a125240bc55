"""Reading ONNX files that may be broken or hostile: parse errors, text that is not UTF-8,
attributes of the wrong type, tensors whose declared size disagrees with their data, and
external data that would be read from outside the model's folder.

Every check runs before anything big is allocated or any external file is read; each
failure is one :class:`ModelLoadError` naming the tensor, node or field and the path.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from onnx.external_data_helper import load_external_data_for_model

from .errors import ModelLoadError

#: element types packed two to a byte
_FOUR_BIT = frozenset(
    getattr(onnx.TensorProto, name)
    for name in ("INT4", "UINT4", "FLOAT4E2M1")
    if hasattr(onnx.TensorProto, name)
)
#: element types held as two numbers each in the typed fields
_COMPLEX = frozenset({onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128})


def load_onnx(source: str | Path | bytes) -> onnx.ModelProto:
    """Load an ONNX model from a path or bytes, raising :class:`ModelLoadError` with the reason.

    Weights in external files (``onnx.save(..., save_as_external_data=True)``) are read from
    files inside the model's folder only; a model given as bytes never touches the file
    system (one with external data references is refused).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, where, folder = bytes(source), "<bytes>", None
    else:
        path = Path(source)
        if not path.exists():
            raise ModelLoadError(f"model file not found: {str(path)!r}")
        if path.is_dir():
            raise ModelLoadError(f"{str(path)!r} is a directory, not an ONNX model file")
        if not path.is_file():  # a device or a pipe (/dev/zero would never end)
            raise ModelLoadError(f"{str(path)!r} is not a regular file, not an ONNX model file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"cannot read model file {str(path)!r}: {exc.strerror}") from exc
        where, folder = str(path), path.parent
    if not data:
        raise ModelLoadError(f"{where!r} is empty, not an ONNX model")
    try:
        model = onnx.load_from_string(data)
    except DecodeError as exc:
        raise ModelLoadError(f"{where!r} is not an ONNX model (or it is truncated): {exc}") from exc
    if not model.graph.node:
        raise ModelLoadError(f"{where!r} is not an ONNX model: it has no graph nodes")
    check_text(model, where)
    check_attribute_types(model, where)
    external = []
    for tensor in all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            external.append(tensor)
        else:
            check_tensor_data(tensor, where)
    if external:
        if folder is None:
            raise ModelLoadError(
                f"tensor {external[0].name!r} of the model given as bytes keeps its data in an "
                f"external file ({_external_info(external[0]).get('location', '')!r}); bytes "
                "are never read with files beside them: load the model from its path"
            )
        for tensor in external:
            check_external_data(tensor, folder, where)
        try:
            load_external_data_for_model(model, str(folder))
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise ModelLoadError(f"cannot read the external weights of {where!r}: {exc}") from exc
    return model


# ------------------------------------------------------------------------------- walks


def all_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Every tensor the model holds: initializers (sparse ones' values and indices too) and
    tensor attributes of nodes, in subgraphs as well."""
    found: list[onnx.TensorProto] = []
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        found.extend(graph.initializer)
        for sparse in graph.sparse_initializer:
            found.extend((sparse.values, sparse.indices))
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    found.append(attribute.t)
                found.extend(attribute.tensors)
                if attribute.HasField("g"):
                    graphs.append(attribute.g)
                graphs.extend(attribute.graphs)
    return found


def check_text(message: Message, where: str, path: str = "model") -> None:
    """Raise when a text field of ``message`` is not UTF-8 (protobuf then hands it over as
    bytes: a corrupted file, or a hostile one). Bytes fields (weights) are not touched."""
    for descriptor in message.DESCRIPTOR.fields:
        name = f"{path}.{descriptor.name}"
        if descriptor.type == FieldDescriptor.TYPE_STRING:
            if descriptor.is_repeated:
                texts = list(getattr(message, descriptor.name))
            elif message.HasField(descriptor.name):
                texts = [getattr(message, descriptor.name)]
            else:
                continue
            for index, text in enumerate(texts):
                if not isinstance(text, str):
                    field = f"{name}[{index}]" if descriptor.is_repeated else name
                    raise ModelLoadError(
                        f"{where!r} is corrupted: the text of {_readable(message, field)} is "
                        "not UTF-8"
                    )
        elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            if descriptor.is_repeated:
                for index, item in enumerate(getattr(message, descriptor.name)):
                    check_text(item, where, f"{name}[{index}]")
            elif message.HasField(descriptor.name):
                check_text(getattr(message, descriptor.name), where, name)


def _readable(message: Message, field: str) -> str:
    """``field`` with the name of the message it is in, when it has a readable one."""
    name = getattr(message, "name", None) or getattr(message, "key", None)
    return f"{field} (in {name!r})" if isinstance(name, str) and name else field


def check_attribute_types(model: onnx.ModelProto, where: str) -> None:
    """Raise when a node of a standard ONNX op carries an attribute of another type than
    its schema says (an INTS ``kernel_shape`` given as a graph, say): cnnviz and
    onnxruntime read attributes by their schema's type."""
    opsets = {opset.domain or "ai.onnx": opset.version for opset in model.opset_import}
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            domain = node.domain or "ai.onnx"
            version = opsets.get(domain)
            if domain != "ai.onnx" or version is None:
                continue
            try:
                schema = onnx.defs.get_schema(node.op_type, min(max(version, 1), 10**4), "")
            except onnx.defs.SchemaError:
                continue  # an op ONNX does not know: onnxruntime will say so
            for attribute in node.attribute:
                graphs.extend([attribute.g] if attribute.HasField("g") else [])
                graphs.extend(attribute.graphs)
                wanted = schema.attributes.get(attribute.name)
                if wanted is None:
                    continue
                wanted_type = str(wanted.type).rsplit(".", 1)[-1]  # AttrType.INTS -> INTS
                if _attribute_type(attribute.type) == wanted_type:
                    continue
                raise ModelLoadError(
                    f"{where!r}: node {node.name!r} ({node.op_type}) has attribute "
                    f"{attribute.name!r} of type {_attribute_type(attribute.type)}, but ONNX "
                    f"{node.op_type} wants {wanted_type}"
                )


def _attribute_type(value: int) -> str:
    try:
        return str(onnx.AttributeProto.AttributeType.Name(value))
    except ValueError:
        return f"unknown ({value})"


def _element_type(value: int) -> str:
    try:
        return str(onnx.TensorProto.DataType.Name(value))
    except ValueError:
        return f"unknown ({value})"


# ----------------------------------------------------------------------------- tensors


def declared_elements(tensor: onnx.TensorProto, where: str) -> int:
    """Number of values a tensor's ``dims`` declare; raises on a negative dim."""
    if any(d < 0 for d in tensor.dims):
        raise ModelLoadError(
            f"{where!r}: tensor {tensor.name!r} declares a negative dimension {list(tensor.dims)}"
        )
    return math.prod(tensor.dims)


def declared_bytes(tensor: onnx.TensorProto, where: str) -> int:
    """Bytes a tensor's ``dims`` and type declare (raw layout)."""
    count = declared_elements(tensor, where)
    if tensor.data_type in _FOUR_BIT:
        return (count + 1) // 2
    if tensor.data_type == onnx.TensorProto.STRING:
        return 0
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError):
        raise ModelLoadError(
            f"{where!r}: tensor {tensor.name!r} has an unknown element type "
            f"{_element_type(tensor.data_type)}"
        ) from None
    return count * itemsize


def check_tensor_data(tensor: onnx.TensorProto, where: str) -> None:
    """Raise when a tensor held in the file does not hold the values its shape declares
    (a corrupted file, or a hostile one declaring a gigantic tensor over a few bytes)."""
    if tensor.data_type == onnx.TensorProto.UNDEFINED:
        return  # an empty attribute placeholder; a tensor read as such fails in onnx itself
    count = declared_elements(tensor, where)
    expected_raw = declared_bytes(tensor, where)
    if tensor.HasField("raw_data"):
        held, expected, unit = len(tensor.raw_data), expected_raw, "bytes"
    else:
        field = _typed_field(tensor)
        if field is None:
            return
        held, unit = len(getattr(tensor, field)), "values"
        expected = count * (2 if tensor.data_type in _COMPLEX else 1)
        if tensor.data_type in _FOUR_BIT:
            expected = (count + 1) // 2
    if held != expected:
        raise ModelLoadError(
            f"{where!r} is corrupted: tensor {tensor.name!r} declares shape {list(tensor.dims)} "
            f"({_element_type(tensor.data_type)}, {expected} {unit}) but holds {held} {unit}"
        )


def _typed_field(tensor: onnx.TensorProto) -> str | None:
    try:
        return str(onnx.helper.tensor_dtype_to_field(tensor.data_type))
    except (KeyError, ValueError):
        return None


def _external_info(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def check_external_data(tensor: onnx.TensorProto, folder: Path, where: str) -> None:
    """Raise unless ``tensor``'s external data is a regular file inside ``folder`` (no
    ``..``, absolute path or symbolic link leading out) holding exactly the bytes the
    tensor declares at its offset. Nothing is read."""
    info = _external_info(tensor)
    location = info.get("location", "")
    named = f"tensor {tensor.name!r} keeps its data in {location!r}"
    refused = f"cannot read the external weights of {where!r}: "
    if not location or "\x00" in location:
        raise ModelLoadError(f"{refused}{named}, which is not a file name")
    if os.path.isabs(location) or Path(location).drive or location.startswith(("/", "\\")):
        raise ModelLoadError(
            f"{refused}{named}, an absolute path; external data must lie in the model's "
            "folder, so it is not read"
        )
    base = folder.resolve()
    target = (base / location).resolve()
    if not target.is_relative_to(base):
        raise ModelLoadError(
            f"{refused}{named}, which leads outside the model's folder (to {str(target)!r}); "
            "it is not read"
        )
    if not target.is_file():
        raise ModelLoadError(f"{refused}{named}, which is not a file in {str(base)!r}")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ModelLoadError(
            f"{refused}{named} with offset {info.get('offset')!r} and length "
            f"{info.get('length')!r}, which are not whole numbers"
        ) from None
    size = target.stat().st_size
    wanted = declared_bytes(tensor, where)
    if offset < 0 or (length is not None and length < 0):
        raise ModelLoadError(f"{refused}{named} at a negative offset or length")
    if length is None:
        length = wanted
    if length != wanted or offset + length > size:
        raise ModelLoadError(
            f"{refused}{named}: it declares shape {list(tensor.dims)} ({wanted} bytes) and "
            f"bytes {offset}..{offset + length}, but the file holds {size} bytes"
        )
