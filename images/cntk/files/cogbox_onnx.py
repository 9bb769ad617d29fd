"""Save a trained CNTK function as ONNX for onnxruntime, with CNTK 2.7's export pitfalls handled.

    import cogbox_onnx
    cogbox_onnx.export(z, "model.onnx", {x: sample_features})

writes `model.onnx` and `model.reference.npz` (the sample inputs and CNTK's outputs for them,
under the ONNX graph's input and output names), so the model can be checked wherever it runs:
`cogbox_onnx_check.py` in the keras image, or any onnxruntime. What it handles:

- A `Combine` at the root (a model built with C.combine, or a loaded model) does not export:
  the function exported is `C.as_composite(root.outputs[0].owner)`.
- Loss and metric nodes must not be in the graph: pass `output="name"` to export only the
  named node (e.g. the `z` of `cross_entropy_with_softmax(z, y)`), else the first output.
- CNTK fixes the batch axis at 1: the graph's inputs and outputs get a symbolic batch
  dimension (`N`) instead, and the checker must accept the result.
- Sequence axes (recurrences over C.sequence inputs) export, but onnxruntime's shape inference
  rejects them: refused here with a clear error rather than a file that will not load.
"""
from __future__ import print_function

import os

import cntk as C
import numpy as np

BATCH = "N"


class ExportError(ValueError):
    """The function cannot be exported as a file onnxruntime will load."""


def prediction(function, output=None):
    """The part of `function` that predicts: the node named `output`, else its first output."""
    if output is not None:
        found = function.find_by_name(output)
        if found is None:
            raise ExportError("no node named %r in the function" % output)
        function = found
    root = function.outputs[0].owner
    if root is None:
        raise ExportError("the function's output has no operation to export")
    return C.as_composite(root)


def export(function, path, samples, output=None):
    """Save `function` (pruned to `output`) as ONNX at `path`, with reference data beside it.

    `samples` maps each of the function's inputs (variables or their names) to a batch of
    sample inputs. Returns the path of the reference file.
    """
    model = prediction(function, output)
    for argument in model.arguments:
        if any(axis.is_sequence_axis for axis in argument.dynamic_axes):
            raise ExportError(
                "input %r has a sequence axis: onnxruntime's shape inference rejects CNTK's "
                "sequence exports; unroll it to a static axis first" % argument.name
            )
    feeds = _feeds(model, samples)
    model.save(path, format=C.ModelFormat.ONNX)
    names = _dynamic_batch(path)
    outputs = model.eval(feeds)
    if not isinstance(outputs, dict):
        outputs = {model.outputs[0]: outputs}
    reference = os.path.splitext(path)[0] + ".reference.npz"
    arrays = {}
    for argument, value in feeds.items():
        arrays["input:" + names["inputs"][_position(model.arguments, argument)]] = value
    for variable, value in outputs.items():
        arrays["output:" + names["outputs"][_position(model.outputs, variable)]] = value
    np.savez(reference, **arrays)
    return reference


def _feeds(model, samples):
    by_name = dict((argument.name, argument) for argument in model.arguments)
    feeds = {}
    for key, value in samples.items():
        argument = by_name.get(key) if isinstance(key, str) else key
        if argument is None or argument not in model.arguments:
            raise ExportError("%r is not an input of the exported function" % (key,))
        feeds[argument] = np.asarray(value, dtype=np.float32)
    missing = [a.name or a.uid for a in model.arguments if a not in feeds]
    if missing:
        raise ExportError("no sample given for input(s) %s" % ", ".join(missing))
    return feeds


def _position(variables, variable):
    for index, candidate in enumerate(variables):
        if candidate.uid == variable.uid:
            return index
    raise ExportError("variable %s is not in the exported function" % variable.uid)


def _dynamic_batch(path):
    """Give the saved graph a symbolic batch dimension; check it; return its I/O names."""
    import onnx  # imported here: `prediction` and the error checks work without it

    model = onnx.load(path)
    graph = model.graph
    initialisers = set(init.name for init in graph.initializer)
    inputs = [value for value in graph.input if value.name not in initialisers]
    for value in list(inputs) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) and dims[0].dim_value == 1:
            dims[0].dim_param = BATCH  # setting dim_param clears dim_value (a oneof)
    del graph.value_info[:]  # intermediate shapes were inferred for batch 1
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return {"inputs": [v.name for v in inputs], "outputs": [v.name for v in graph.output]}
