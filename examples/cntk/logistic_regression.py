"""CNTK 101: logistic regression on two generated Gaussian clusters (CNTK's Tutorials 101).

    python logistic_regression.py [--short] [--out DIR] [--resume]

Prints the loss every few hundred minibatches and the final test error; saves the model
(`model.cntk`), a checkpoint to resume from (`checkpoint.cntk`) and the loss curve
(`loss.csv`) in DIR (default `results/logistic_regression`).
"""
from __future__ import print_function

import argparse
import os

import cntk as C
import numpy as np

FEATURES, CLASSES = 2, 2


def generate(count, rng):
    """Two clusters, one per class, offset by the class index (as the tutorial does)."""
    labels = rng.randint(0, CLASSES, size=count)
    features = (rng.randn(count, FEATURES) + 3) * (labels[:, None] + 1)
    one_hot = np.eye(CLASSES, dtype=np.float32)[labels]
    return features.astype(np.float32), one_hot


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a few seconds, for tests")
    parser.add_argument("--out", default="results/logistic_regression")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    args = parser.parse_args()
    if not os.path.isdir(args.out):
        os.makedirs(args.out)
    rng = np.random.RandomState(1)
    C.cntk_py.set_fixed_random_seed(1)

    x = C.input_variable(FEATURES)
    y = C.input_variable(CLASSES)
    weight = C.parameter(shape=(FEATURES, CLASSES))
    bias = C.parameter(shape=(CLASSES,))
    z = C.times(x, weight) + bias
    loss = C.cross_entropy_with_softmax(z, y)
    error = C.classification_error(z, y)
    learner = C.sgd(z.parameters, C.learning_parameter_schedule(0.1))
    trainer = C.Trainer(z, (loss, error), [learner])

    checkpoint = os.path.join(args.out, "checkpoint.cntk")
    start = 0
    if args.resume and os.path.exists(checkpoint):
        start = trainer.restore_from_checkpoint(checkpoint)["minibatch"]
        print("resumed at minibatch %d" % start)
    minibatches, size = (200, 25) if args.short else (20000, 25)
    curve = []
    for step in range(start, minibatches):
        features, labels = generate(size, rng)
        trainer.train_minibatch({x: features, y: labels})
        curve.append((step, trainer.previous_minibatch_loss_average))
        if step % (minibatches // 10) == 0:
            print("minibatch %5d/%d  loss %.4f" % (step, minibatches, curve[-1][1]))
    trainer.save_checkpoint(checkpoint, {"minibatch": minibatches})
    z.save(os.path.join(args.out, "model.cntk"))
    with open(os.path.join(args.out, "loss.csv"), "w") as out:
        out.write("minibatch,loss\n")
        out.writelines("%d,%.6f\n" % point for point in curve)

    features, labels = generate(2000, rng)
    test_error = trainer.test_minibatch({x: features, y: labels})
    print("weights %s bias %s" % (np.round(weight.value, 3).tolist(), np.round(bias.value, 3)))
    print("FINAL test_error=%.4f" % test_error)


if __name__ == "__main__":
    main()
