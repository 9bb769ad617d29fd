"""Run a model exported from the cntk image in onnxruntime, and compare with CNTK's outputs.

    python onnx_roundtrip.py [DIR] [--tolerance 1e-5]

DIR (default `results/onnx`) holds model.onnx and model.reference.npz, as
examples/cntk/export_onnx.py writes them (into a storage folder, to share between sessions).
"""

import argparse

from cogbox_onnx_check import compare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default="results/onnx")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    differences = compare(f"{args.dir}/model.onnx")
    for name, difference in differences.items():
        print(f"output {name}: max abs diff from CNTK {difference:.3g}")
    worst = max(differences.values())
    print(f"FINAL max_abs_diff={worst:.3g}")
    raise SystemExit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
