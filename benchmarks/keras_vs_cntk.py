"""The same MLP trained in the `keras` image (Keras 3 on JAX, CPU) and in `cntk` (CNTK 2.7).

Run as root with both images built:  .venv/bin/python benchmarks/keras_vs_cntk.py
Prints a markdown table and writes benchmarks/results/keras_vs_cntk.md. Both train
benchmarks/jail_overhead.py's 784-400-200-10 ReLU MLP (SGD, lr 0.01, minibatches of 64 from
2048 random samples) for 6 s after a 1 s warm-up, jailed with their images' policies, in
alternating order; samples/s is the best of the runs (the VM's throughput is bimodal).
"""

import os
import platform
import sys
import time
from pathlib import Path

from jail_overhead import MLP, MLP_ROUNDS, interleaved, run_jail

from cogbox.images.store import ImageStore
from cogbox.jail.policy import load_policy

RESULTS = Path(__file__).parent / "results" / "keras_vs_cntk.md"

KERAS_MLP = r"""
import time, numpy as np, keras
from keras import layers
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input(shape=(784,)), layers.Dense(400, activation="relu"),
                          layers.Dense(200, activation="relu"), layers.Dense(10)])
model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01),
              loss=keras.losses.CategoricalCrossentropy(from_logits=True))
batch = 64
data = np.random.rand(batch * 32, 784).astype(np.float32)
labels = np.eye(10, dtype=np.float32)[np.random.randint(0, 10, batch * 32)]
def train(seconds):
    done, start = 0, time.time()
    while time.time() - start < seconds:
        i = (done // batch) % 32 * batch
        model.train_on_batch(data[i:i + batch], labels[i:i + batch])
        done += batch
    return done / (time.time() - start)
train(1.0)  # warm up (and compile)
print("RESULT %.1f" % train(6.0))
"""


def main() -> int:
    if os.geteuid() != 0:
        print("run as root: the jail needs runc, cgroups and mounts", file=sys.stderr)
        return 2
    store = ImageStore()
    cntk, keras = store.get("cntk"), store.get("keras")
    began = time.monotonic()
    cntk_policy, keras_policy = load_policy(cntk.policy_path), load_policy(keras.policy_path)
    cntk_runs, keras_runs = interleaved(
        lambda: run_jail(cntk, cntk_policy, ["/usr/bin/python2.7", "-c", MLP]),
        lambda: run_jail(keras, keras_policy, ["/usr/bin/python3", "-c", KERAS_MLP]),
        MLP_ROUNDS,
    )
    best_cntk, best_keras = max(cntk_runs), max(keras_runs)
    table = (
        "| 784-400-200-10 MLP training, jailed | cntk (CNTK 2.7) | keras (Keras 3, JAX CPU) "
        "| keras / cntk |\n|---|---|---|---|\n"
        f"| samples/s (best of {MLP_ROUNDS}) | {best_cntk:,.0f} | {best_keras:,.0f} "
        f"| {best_keras / best_cntk:.2f}x |\n"
    )
    detail = (
        f"\nRuns (alternating): cntk {', '.join(f'{v:,.0f}' for v in cntk_runs)}; "
        f"keras {', '.join(f'{v:,.0f}' for v in keras_runs)} samples/s.\n"
        f"\nMachine: {platform.node()}, kernel {platform.release()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at the end; "
        f"total benchmark time {time.monotonic() - began:.0f} s.\n"
    )
    report = "# Keras 3 (JAX) vs CNTK 2.7: the same MLP\n\n" + table + detail
    print(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
