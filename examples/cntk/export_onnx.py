"""Train a small CNTK classifier and export it to ONNX for onnxruntime (the way off CNTK).

    python export_onnx.py [--short] [--out DIR]

Trains the XOR-blob MLP of feedforward.py, then saves it with the image's `cogbox_onnx`
(which handles CNTK 2.7's export pitfalls) as DIR/model.onnx with DIR/model.reference.npz
(sample inputs and CNTK's outputs). Run examples/keras/onnx_roundtrip.py on DIR in the keras
image to check that onnxruntime gives the same outputs. DIR defaults to `results/onnx`; make it
a storage folder (`-v models`, DIR `models`) to carry the model from one session to another.
"""
from __future__ import print_function

import argparse
import os

import cntk as C
import cogbox_onnx
import numpy as np

from feedforward import CLASSES, FEATURES, generate, model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a few seconds, for tests")
    parser.add_argument("--out", default="results/onnx")
    args = parser.parse_args()
    if not os.path.isdir(args.out):
        os.makedirs(args.out)
    rng = np.random.RandomState(6)
    C.cntk_py.set_fixed_random_seed(6)
    x = C.input_variable(FEATURES, name="features")
    y = C.input_variable(CLASSES)
    z = C.alias(model(x), name="prediction")
    loss = C.cross_entropy_with_softmax(z, y, name="loss")
    learner = C.adam(z.parameters, C.learning_parameter_schedule(0.01), C.momentum_schedule(0.9))
    trainer = C.Trainer(z, (loss, C.classification_error(z, y)), [learner])
    for _ in range(1500 if args.short else 6000):
        features, labels = generate(32, rng)
        trainer.train_minibatch({x: features, y: labels})
    features, labels = generate(1000, rng)
    print("test error %.4f" % trainer.test_minibatch({x: features, y: labels}))
    # The loss is what was trained; what is exported is the prediction, pruned from it.
    path = os.path.join(args.out, "model.onnx")
    reference = cogbox_onnx.export(loss, path, {"features": features[:256]}, output="prediction")
    print("saved %s (%d bytes) and %s" % (path, os.path.getsize(path), reference))
    print("FINAL exported=1")


if __name__ == "__main__":
    main()
