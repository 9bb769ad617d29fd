"""Run an ONNX model in onnxruntime on the reference data saved beside it, and compare.

    python -m cogbox_onnx_check model.onnx [--tolerance 1e-5]

`model.reference.npz` is what the cntk image's `cogbox_onnx.export` wrote: sample inputs
(`input:<name>`) and CNTK's outputs for them (`output:<name>`). Prints the largest absolute
difference per output and exits 1 when any exceeds the tolerance.
"""

import argparse
import os
import sys

import numpy as np
import onnx
import onnxruntime


def compare(model_path: str) -> dict[str, float]:
    """The largest absolute difference per output between onnxruntime and the reference."""
    onnx.checker.check_model(onnx.load(model_path))
    reference = np.load(os.path.splitext(model_path)[0] + ".reference.npz")
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    feeds = {
        key.removeprefix("input:"): reference[key] for key in reference if key.startswith("input:")
    }
    names = [output.name for output in session.get_outputs()]
    results = dict(zip(names, session.run(names, feeds), strict=True))
    return {
        name: float(np.max(np.abs(results[name] - reference["output:" + name])))
        for name in names
        if "output:" + name in reference
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    differences = compare(args.model)
    if not differences:
        sys.exit("no output of the model has reference data")
    for name, difference in differences.items():
        print(f"{name}: max abs diff {difference:.3g}")
    sys.exit(0 if max(differences.values()) <= args.tolerance else 1)


if __name__ == "__main__":
    main()
