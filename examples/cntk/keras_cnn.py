"""Keras 2.3.1 on CNTK: the shapes CNN of cnn.py written in Keras (the seed's frontend).

    python keras_cnn.py [--short] [--out DIR] [--resume]     (needs shapes.py beside it)

Its Keras 3 port is examples/keras/cnn.py; docs/migrating-from-cntk.md lists every change
between the two. Saves the model (`model.h5`), a checkpoint per epoch (`checkpoint.h5`,
`--resume` continues from it) and the loss curve (`loss.csv`) in DIR (default
`results/keras_cnn`).
"""
from __future__ import print_function

import argparse
import os

import numpy as np
from keras import callbacks, layers, models, optimizers

import shapes

SIDE = 28


def build():
    model = models.Sequential([
        layers.Conv2D(8, (5, 5), padding="same", activation="relu", input_shape=(SIDE, SIDE, 1)),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(16, (5, 5), padding="same", activation="relu"),
        layers.MaxPooling2D((3, 3)),
        layers.Flatten(),
        layers.Dense(len(shapes.CLASSES), activation="softmax"),
    ])
    model.compile(optimizer=optimizers.SGD(lr=0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a few seconds, for tests")
    parser.add_argument("--out", default="results/keras_cnn")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    args = parser.parse_args()
    if not os.path.isdir(args.out):
        os.makedirs(args.out)
    rng = np.random.RandomState(4)
    samples, epochs = (600, 2) if args.short else (6000, 8)
    train_x, train_y = shapes.single(samples, SIDE, rng)
    test_x, test_y = shapes.single(1000, SIDE, rng)
    train_x, test_x = train_x.transpose(0, 2, 3, 1), test_x.transpose(0, 2, 3, 1)  # NHWC

    checkpoint = os.path.join(args.out, "checkpoint.h5")
    start = 0
    if args.resume and os.path.exists(checkpoint):
        model = models.load_model(checkpoint)
        start = int(open(checkpoint + ".epoch").read())
        print("resumed at epoch %d" % start)
    else:
        model = build()

    class Epoch(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            with open(checkpoint + ".epoch", "w") as out:
                out.write(str(epoch + 1))

    model.fit(train_x, train_y, batch_size=50, epochs=epochs, initial_epoch=start, verbose=2,
              callbacks=[callbacks.ModelCheckpoint(checkpoint), Epoch(),
                         callbacks.CSVLogger(os.path.join(args.out, "loss.csv"), append=True)])
    model.save(os.path.join(args.out, "model.h5"))
    _, accuracy = model.evaluate(test_x, test_y, verbose=0)
    print("FINAL test_accuracy=%.4f" % accuracy)


if __name__ == "__main__":
    main()
