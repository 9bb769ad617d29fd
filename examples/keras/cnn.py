"""Keras 3 on JAX: the shapes CNN, ported from examples/cntk/keras_cnn.py (Keras 2 on CNTK).

    python cnn.py [--short] [--out DIR] [--resume]     (needs shapes.py beside it)

docs/migrating-from-cntk.md lists every change from the Keras 2 version. Saves the model
(`model.keras`), a checkpoint per epoch (`checkpoint.keras`, `--resume` continues from it),
the loss curve as CSV and as a PNG (`loss.png`) in DIR (default `results/keras_cnn`).
"""

import argparse
import os

import keras
import matplotlib.pyplot as plt
import numpy as np
from keras import callbacks, layers, optimizers

import shapes

SIDE = 28


def build() -> keras.Model:
    model = keras.Sequential([
        keras.Input(shape=(SIDE, SIDE, 1)),
        layers.Conv2D(8, (5, 5), padding="same", activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(16, (5, 5), padding="same", activation="relu"),
        layers.MaxPooling2D((3, 3)),
        layers.Flatten(),
        layers.Dense(len(shapes.CLASSES), activation="softmax"),
    ])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a few seconds, for tests")
    parser.add_argument("--out", default="results/keras_cnn")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    print("Keras %s on %s" % (keras.__version__, keras.backend.backend()))
    keras.utils.set_random_seed(4)
    rng = np.random.RandomState(4)
    samples, epochs = (600, 2) if args.short else (6000, 8)
    train_x, train_y = shapes.single(samples, SIDE, rng)
    test_x, test_y = shapes.single(1000, SIDE, rng)
    train_x, test_x = train_x.transpose(0, 2, 3, 1), test_x.transpose(0, 2, 3, 1)  # NHWC

    checkpoint = os.path.join(args.out, "checkpoint.keras")
    start = 0
    if args.resume and os.path.exists(checkpoint):
        model = keras.models.load_model(checkpoint)
        with open(checkpoint + ".epoch") as saved:
            start = int(saved.read())
        print("resumed at epoch %d" % start)
    else:
        model = build()

    class Epoch(callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            with open(checkpoint + ".epoch", "w") as out:
                out.write(str(epoch + 1))

    curve = os.path.join(args.out, "loss.csv")
    model.fit(train_x, train_y, batch_size=50, epochs=epochs, initial_epoch=start, verbose=2,
              callbacks=[callbacks.ModelCheckpoint(checkpoint), Epoch(),
                         callbacks.CSVLogger(curve, append=True)])
    model.save(os.path.join(args.out, "model.keras"))
    history = np.genfromtxt(curve, delimiter=",", names=True)
    plt.plot(np.atleast_1d(history["epoch"]) + 1, np.atleast_1d(history["loss"]), marker="o")
    plt.xlabel("epoch")
    plt.ylabel("training loss")
    plt.savefig(os.path.join(args.out, "loss.png"))
    _, accuracy = model.evaluate(test_x, test_y, verbose=0)
    print("FINAL test_accuracy=%.4f" % accuracy)


if __name__ == "__main__":
    main()
