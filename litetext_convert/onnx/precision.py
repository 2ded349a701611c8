"""The precision ladder of an ONNX export: fp32 (exported), fp16 and int8 (derived from fp32).

fp16: every float32 weight initializer is stored in float16 (round to nearest even) and a Cast back
to float32 sits after it: the bytes halve, the arithmetic stays float32 (onnxruntime's CPU kernels
for float16 are few; the cost measured is the weights' rounding).
int8: onnxruntime's dynamic quantization of the MatMul/Gemm weights, per output channel, symmetric
int8; activations are quantized at run time.

Weight names: the exporter names initializers after the torch parameters (`text_encoder.layers.0...`).
Its optimizer folds a Transpose of a weight into an anonymous constant (`val_62`); litetext exports
unoptimised and folds those transposes itself, naming the result `<parameter>::T<perm>`, so every
weight of every rung can be traced back to the source tensor it must equal (exactness.py).
"""

from __future__ import annotations

from pathlib import Path

TRANSPOSED = "::T"  # `<parameter>::T10`: the parameter transposed with permutation (1, 0)
FP16_STORED = "::fp16"  # `<weight>::fp16`: the float16 initializer a Cast widens back to `<weight>`


def load_model(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=True)


def save_model(model, path: Path, external: bool) -> None:
    import onnx

    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def is_external(path: Path) -> bool:
    return Path(str(path) + ".data").exists()


def fold_weight_transposes(model) -> int:
    """Transpose(initializer) -> one initializer named after its parameter and permutation; the
    Transpose node goes. Returns how many were folded."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    folded = []
    for node in model.graph.node:
        if node.op_type != "Transpose" or node.input[0] not in initializers:
            continue
        source = numpy_helper.to_array(initializers[node.input[0]])
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), list(range(source.ndim))[::-1])
        name = f"{node.input[0]}{TRANSPOSED}{''.join(map(str, perm))}"
        if name not in initializers:  # a weight read by several layers (a shared head) is folded once
            initializers[name] = numpy_helper.from_array(source.transpose(perm).copy(), name)
            model.graph.initializer.append(initializers[name])
        _rename_input(model, node.output[0], name)
        folded.append(node)
    for node in folded:
        model.graph.node.remove(node)
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
    return len(folded)


def _rename_input(model, old: str, new: str) -> None:
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
    for output in model.graph.output:
        if output.name == old:  # never a graph output in practice; kept correct anyway
            output.name = new


def write_rung(fp32_path: Path, path: Path, rung: str) -> None:
    if rung == "fp16":
        write_fp16(fp32_path, path)
    elif rung == "int8":
        write_int8(fp32_path, path)
    else:
        raise ValueError(f"no rung {rung!r}")


def write_fp16(fp32_path: Path, path: Path) -> None:
    """Float32 weights stored as float16, each widened by a Cast where the graph reads it."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    model = load_model(fp32_path)
    casts = []
    for init in list(model.graph.initializer):
        if init.data_type != TensorProto.FLOAT or _elements(init) < 2:
            continue  # scalars stay: they are constants of the arithmetic, not weights
        stored = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + FP16_STORED)
        casts.append(helper.make_node("Cast", [stored.name], [init.name], to=TensorProto.FLOAT, name=f"widen {init.name}"))
        model.graph.initializer.remove(init)
        model.graph.initializer.append(stored)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(casts + nodes)  # the casts first: the graph stays topologically sorted
    save_model(model, path, is_external(fp32_path))


def _elements(init) -> int:
    count = 1
    for dim in init.dims:
        count *= dim
    return count


INT8_OPS = ("MatMul", "Gemm")


def int8_keep_float() -> list[str]:
    """The weight patterns the int8 rung keeps in float32 ([rungs.int8] keep_float of
    configs/targets/onnx.toml, with the measurement that chose them)."""
    from litetext_convert.paths import read_config

    return list(read_config("targets/onnx.toml")["rungs"]["int8"].get("keep_float", []))


def nodes_reading(model, patterns: list[str]) -> list[str]:
    """Names of the MatMul/Gemm nodes whose weight initializer matches one of the fnmatch patterns
    (matched against the parameter's name: `text_encoder.layers.3.mlp.fc1.weight::T10`)."""
    from fnmatch import fnmatchcase

    weights = {init.name for init in model.graph.initializer}
    return [node.name for node in model.graph.node
            if node.op_type in INT8_OPS and any(name in weights and any(fnmatchcase(name, p) for p in patterns)
                                                for name in node.input)]


def write_int8(fp32_path: Path, path: Path, keep_float: list[str] | None = None) -> list[str]:
    """onnxruntime.quantization.quantize_dynamic, per channel, int8 weights (MatMul, Gemm), except the
    nodes whose weights match `keep_float` (default: the config's). Returns the nodes kept in float32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    patterns = int8_keep_float() if keep_float is None else keep_float
    excluded = nodes_reading(onnx.load(str(fp32_path), load_external_data=False), patterns) if patterns else []
    quantize_dynamic(str(fp32_path), str(path), per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=list(INT8_OPS), nodes_to_exclude=excluded,
                     use_external_data_format=is_external(fp32_path), extra_options={"MatMulConstBOnly": True})
    return excluded
