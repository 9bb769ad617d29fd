"""CNTK 102: a feed-forward classifier (two hidden layers) on generated, non-linear data.

    python feedforward.py [--short] [--out DIR] [--resume]

The data are four Gaussian blobs in an XOR layout (class = which diagonal), which no linear
model separates. Prints progress and the final test error; saves the model, a checkpoint to
resume from and the loss curve in DIR (default `results/feedforward`).
"""
from __future__ import print_function

import argparse
import os

import cntk as C
import numpy as np

FEATURES, CLASSES, HIDDEN = 2, 2, 50


def generate(count, rng):
    corners = rng.randint(0, 4, size=count)
    centres = np.array([[-1, -1], [1, 1], [-1, 1], [1, -1]], dtype=np.float32)
    features = centres[corners] + 0.35 * rng.randn(count, FEATURES)
    labels = (corners >= 2).astype(np.int64)  # the two diagonals
    return features.astype(np.float32), np.eye(CLASSES, dtype=np.float32)[labels]


def model(features):
    with C.layers.default_options(init=C.glorot_uniform(), activation=C.relu):
        hidden = C.layers.Sequential([C.layers.Dense(HIDDEN), C.layers.Dense(HIDDEN)])
        return C.layers.Dense(CLASSES, activation=None)(hidden(features))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a few seconds, for tests")
    parser.add_argument("--out", default="results/feedforward")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    args = parser.parse_args()
    if not os.path.isdir(args.out):
        os.makedirs(args.out)
    rng = np.random.RandomState(2)
    C.cntk_py.set_fixed_random_seed(2)

    x = C.input_variable(FEATURES)
    y = C.input_variable(CLASSES)
    z = model(x)
    loss = C.cross_entropy_with_softmax(z, y)
    error = C.classification_error(z, y)
    learner = C.adam(z.parameters, C.learning_parameter_schedule(0.01), C.momentum_schedule(0.9))
    trainer = C.Trainer(z, (loss, error), [learner])

    checkpoint = os.path.join(args.out, "checkpoint.cntk")
    start = 0
    if args.resume and os.path.exists(checkpoint):
        start = trainer.restore_from_checkpoint(checkpoint)["minibatch"]
        print("resumed at minibatch %d" % start)
    minibatches, size = (1500, 32) if args.short else (20000, 32)
    curve = []
    for step in range(start, minibatches):
        features, labels = generate(size, rng)
        trainer.train_minibatch({x: features, y: labels})
        curve.append((step, trainer.previous_minibatch_loss_average,
                      trainer.previous_minibatch_evaluation_average))
        if step % (minibatches // 10) == 0:
            print("minibatch %5d/%d  loss %.4f  error %.3f" % ((step, minibatches) + curve[-1][1:]))
    trainer.save_checkpoint(checkpoint, {"minibatch": minibatches})
    z.save(os.path.join(args.out, "model.cntk"))
    with open(os.path.join(args.out, "loss.csv"), "w") as out:
        out.write("minibatch,loss,error\n")
        out.writelines("%d,%.6f,%.4f\n" % point for point in curve)

    features, labels = generate(4000, rng)
    print("FINAL test_error=%.4f" % trainer.test_minibatch({x: features, y: labels}))


if __name__ == "__main__":
    main()
