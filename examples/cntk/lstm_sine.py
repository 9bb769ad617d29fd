"""CNTK 106A: an LSTM that forecasts a generated sine wave (CNTK's Tutorials 106A).

    python lstm_sine.py [--short] [--out DIR] [--resume]

Windows of N past values predict the value M steps ahead, as the tutorial does with its
generated sine series. Prints the training loss per epoch and the final test mean squared
error beside the error of a naive forecast (repeat the last value); saves the model, a
checkpoint and the loss curve in DIR (default `results/lstm_sine`).
"""
from __future__ import print_function

import argparse
import os

import cntk as C
import numpy as np

N, M = 5, 5  # input window, forecast distance


def windows(count, start):
    """`count` windows of N values of sin(t) and the value M steps after each."""
    t = np.linspace(start, start + count * 0.1, count + N + M, dtype=np.float32)
    series = np.sin(t)
    xs = np.stack([series[i:i + N] for i in range(count)])[:, :, None]  # (count, N, 1)
    ys = series[N + M - 1:N + M - 1 + count][:, None]
    return xs.astype(np.float32), ys.astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a few seconds, for tests")
    parser.add_argument("--out", default="results/lstm_sine")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    args = parser.parse_args()
    if not os.path.isdir(args.out):
        os.makedirs(args.out)
    C.cntk_py.set_fixed_random_seed(3)
    rng = np.random.RandomState(3)

    x = C.sequence.input_variable(1)
    y = C.input_variable(1)
    with C.layers.default_options(initial_state=0.1):
        recurrent = C.layers.Recurrence(C.layers.LSTM(N))(x)
        z = C.layers.Dense(1)(C.layers.Dropout(0.2)(C.sequence.last(recurrent)))
    loss = C.squared_error(z, y)
    learner = C.fsadagrad(
        z.parameters, lr=C.learning_parameter_schedule(0.02),
        momentum=C.momentum_schedule(0.9), gradient_clipping_threshold_per_sample=1.0,
    )
    trainer = C.Trainer(z, (loss, loss), [learner])

    train_x, train_y = windows(1000 if args.short else 4000, 0.0)
    test_x, test_y = windows(1000, 500.0)
    checkpoint = os.path.join(args.out, "checkpoint.cntk")
    start = 0
    if args.resume and os.path.exists(checkpoint):
        start = trainer.restore_from_checkpoint(checkpoint)["epoch"]
        print("resumed at epoch %d" % start)
    epochs, batch = (10, 50) if args.short else (60, 100)
    curve = []
    for epoch in range(start, epochs):
        order = rng.permutation(len(train_x))
        losses = []
        for i in range(0, len(order), batch):
            chosen = order[i:i + batch]
            trainer.train_minibatch({x: list(train_x[chosen]), y: train_y[chosen]})
            losses.append(trainer.previous_minibatch_loss_average)
        curve.append((epoch, float(np.mean(losses))))
        print("epoch %3d/%d  loss %.5f" % (epoch + 1, epochs, curve[-1][1]))
    trainer.save_checkpoint(checkpoint, {"epoch": epochs})
    z.save(os.path.join(args.out, "model.cntk"))
    with open(os.path.join(args.out, "loss.csv"), "w") as out:
        out.write("epoch,loss\n")
        out.writelines("%d,%.6f\n" % point for point in curve)

    predicted = z.eval({x: list(test_x)}).reshape(-1)
    mse = float(np.mean((predicted - test_y[:, 0]) ** 2))
    naive = float(np.mean((test_x[:, -1, 0] - test_y[:, 0]) ** 2))
    print("naive forecast mse %.5f" % naive)
    print("FINAL test_mse=%.5f" % mse)


if __name__ == "__main__":
    main()
