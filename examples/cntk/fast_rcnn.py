"""A Fast R-CNN-style detector on generated scenes of shapes: region proposals, ROI pooling,
a classifier and a box regressor per region (after CNTK's Examples/Image/Detection/FastRCNN,
scaled from VOC images and AlexNet to 64x64 scenes and minutes on 2 cores).

    python fast_rcnn.py [--short] [--out DIR] [--resume]     (needs shapes.py beside it)

Proposals come from a bottom-up step, as selective search gives them to Fast R-CNN: the
bright regions' boxes (connected components), jittered, topped up with a grid of windows.
Each region is labelled by its best overlap with a true box (IoU >= 0.5: that shape; else
background). The network pools each region of a shared convolutional map to 4x4 (CNTK's
`roipooling`), then scores the classes and refines the box. Prints loss per epoch and the
final mean average precision at IoU 0.5 on new scenes; saves the model, a checkpoint to resume
from, the loss curve and the test detections (`detections.csv`) in DIR (default
`results/fast_rcnn`).
"""
from __future__ import print_function

import argparse
import os

import cntk as C
import numpy as np
from scipy import ndimage

import shapes

SIDE, ROIS, POSITIVES = 64, 64, 16
CLASSES = len(shapes.CLASSES) + 1  # 0 is background
SCALE = 1 / 4.0  # two 2x2 poolings before the ROI pooling


def proposals(image, rng):
    """ROIS boxes (x1, y1, x2, y2) for one image, from its bright regions and a grid."""
    found = []
    components, count = ndimage.label(image[0] > 0.35)
    for rows, cols in ndimage.find_objects(components)[:count]:
        box = np.array([cols.start, rows.start, cols.stop, rows.stop], dtype=np.float32)
        found.append(box)
        for _ in range(6):
            size = box[2:] - box[:2]
            shift = rng.uniform(-0.25, 0.25, 2) * size
            scale = rng.uniform(0.8, 1.25, 2)
            centre = (box[:2] + box[2:]) / 2 + shift
            found.append(np.concatenate([centre - size * scale / 2, centre + size * scale / 2]))
    for size in (12, 20, 28):
        for top in range(0, SIDE - size + 1, 12):
            for left in range(0, SIDE - size + 1, 12):
                found.append(np.array([left, top, left + size, top + size], np.float32))
    boxes = np.clip(np.array(found, dtype=np.float32), 0, SIDE)
    keep = (boxes[:, 2] - boxes[:, 0] >= 4) & (boxes[:, 3] - boxes[:, 1] >= 4)
    return boxes[keep]


def targets(boxes, truth, labels):
    """Per box: its class (0: background) and the regression target to its true box."""
    classes = np.zeros(len(boxes), dtype=np.int64)
    deltas = np.zeros((len(boxes), 4), dtype=np.float32)
    for i, box in enumerate(boxes):
        overlaps = [shapes.iou(box, other) for other in truth]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= 0.5:
            classes[i] = labels[best] + 1
            deltas[i] = encode(box, truth[best])
    return classes, deltas


def encode(box, truth):
    size = box[2:] - box[:2]
    true_size = truth[2:] - truth[:2]
    centre = (box[:2] + box[2:]) / 2
    true_centre = (truth[:2] + truth[2:]) / 2
    return np.concatenate([(true_centre - centre) / size, np.log(true_size / size)])


def decode(box, delta):
    size = box[2:] - box[:2]
    centre = (box[:2] + box[2:]) / 2 + delta[:2] * size
    size = size * np.exp(np.clip(delta[2:], -2, 2))
    return np.concatenate([centre - size / 2, centre + size / 2])


def sample(boxes, classes, deltas, rng, train):
    """ROIS regions: at training, up to POSITIVES shapes and background for the rest."""
    if train:
        positive = np.flatnonzero(classes > 0)
        negative = np.flatnonzero(classes == 0)
        positive = rng.permutation(positive)[:POSITIVES]
        negative = rng.choice(negative, ROIS - len(positive), replace=len(negative) < ROIS)
        chosen = np.concatenate([positive, negative])
    else:
        chosen = np.arange(min(ROIS, len(boxes)))
        chosen = np.concatenate([chosen, np.zeros(ROIS - len(chosen), np.int64)])
    return boxes[chosen], classes[chosen], deltas[chosen]


def batch(scenes, rng, train):
    """Network inputs for a list of (image, truth, labels) scenes."""
    images, rois, onehots, deltas, weights = [], [], [], [], []
    for image, truth, labels in scenes:
        boxes = proposals(image, rng)
        if train:  # the true boxes are proposals too, as in Fast R-CNN's training
            boxes = np.concatenate([truth, boxes])
        classes, box_deltas = targets(boxes, truth, labels)
        boxes, classes, box_deltas = sample(boxes, classes, box_deltas, rng, train)
        images.append(image)
        rois.append(boxes)
        onehots.append(np.eye(CLASSES, dtype=np.float32)[classes])
        deltas.append(box_deltas)
        weights.append(np.repeat((classes > 0)[:, None], 4, axis=1).astype(np.float32))
    return [np.array(part, dtype=np.float32) for part in (images, rois, onehots, deltas, weights)]


def network(image, rois):
    with C.layers.default_options(init=C.glorot_uniform(), activation=C.relu, pad=True):
        shared = C.layers.Sequential([
            C.layers.Convolution2D((3, 3), 16), C.layers.MaxPooling((2, 2), strides=2),
            C.layers.Convolution2D((3, 3), 32), C.layers.MaxPooling((2, 2), strides=2),
        ])(image)
    pooled = C.roipooling(shared, rois, C.MAX_POOLING, (4, 4), spatial_scale=SCALE)
    hidden = C.layers.Dense(128, activation=C.relu, input_rank=3)(pooled)
    scores = C.layers.Dense(CLASSES, input_rank=1, name="cls_score")(hidden)
    regression = C.layers.Dense(4, input_rank=1, name="bbox_regr")(hidden)
    return scores, regression


def detect(scores, regression, rois, threshold=0.3):
    """(class, score, box) detections for one image, after per-class non-maximum suppression."""
    probabilities = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    found = []
    for kind in range(1, CLASSES):
        candidates = [(probabilities[i, kind], decode(rois[i], regression[i]))
                      for i in range(len(rois)) if probabilities[i].argmax() == kind]
        kept = []
        for score, box in sorted(candidates, key=lambda item: -item[0]):
            if score >= threshold and all(shapes.iou(box, other) < 0.3 for _, other in kept):
                kept.append((score, box))
        found.extend((kind - 1, score, box) for score, box in kept)
    return found


def average_precision(detections, scenes, kind):
    """VOC-style AP at IoU 0.5 for one class over the test scenes."""
    truth_count = sum(int((labels == kind).sum()) for _, _, labels in scenes)
    ranked = sorted(((score, index, box) for index, found in enumerate(detections)
                     for k, score, box in found if k == kind), key=lambda item: -item[0])
    matched = set()
    hits = []
    for _, index, box in ranked:
        _, truth, labels = scenes[index]
        best, which = 0.0, None
        for j, other in enumerate(truth):
            if labels[j] == kind and (index, j) not in matched:
                overlap = shapes.iou(box, other)
                if overlap > best:
                    best, which = overlap, j
        hits.append(best >= 0.5)
        if best >= 0.5:
            matched.add((index, which))
    if truth_count == 0:
        return 1.0
    hits = np.array(hits, dtype=np.float64)
    recall = np.concatenate([[0], np.cumsum(hits) / truth_count, [1]])
    precision = np.concatenate([[1], np.cumsum(hits) / np.arange(1, len(hits) + 1), [0]])
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a few seconds, for tests")
    parser.add_argument("--out", default="results/fast_rcnn")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    args = parser.parse_args()
    if not os.path.isdir(args.out):
        os.makedirs(args.out)
    rng = np.random.RandomState(5)
    C.cntk_py.set_fixed_random_seed(5)

    image = C.input_variable((1, SIDE, SIDE))
    rois = C.input_variable((ROIS, 4))
    classes = C.input_variable((ROIS, CLASSES))
    deltas = C.input_variable((ROIS, 4))
    weights = C.input_variable((ROIS, 4))
    scores, regression = network(image, rois)
    class_loss = C.reduce_mean(C.cross_entropy_with_softmax(scores, classes, axis=1), axis=0)
    box_loss = C.reduce_sum(C.square(regression - deltas) * weights) / POSITIVES
    loss = C.reduce_sum(class_loss) + box_loss
    error = C.classification_error(scores, classes, axis=1)
    model = C.combine([scores, regression])
    learner = C.momentum_sgd(
        model.parameters, C.learning_parameter_schedule(0.01), C.momentum_schedule(0.9),
        l2_regularization_weight=0.0005,
    )
    trainer = C.Trainer(model, (loss, error), [learner])

    count, epochs = (40, 2) if args.short else (600, 12)
    train = [shapes.scene(SIDE, rng) for _ in range(count)]
    test = [shapes.scene(SIDE, rng) for _ in range(20 if args.short else 200)]
    checkpoint = os.path.join(args.out, "checkpoint.cntk")
    start = 0
    if args.resume and os.path.exists(checkpoint):
        start = trainer.restore_from_checkpoint(checkpoint)["epoch"]
        print("resumed at epoch %d" % start)
    curve = []
    for epoch in range(start, epochs):
        losses, errors = [], []
        order = rng.permutation(count)
        for i in range(0, count, 8):
            inputs = batch([train[j] for j in order[i:i + 8]], rng, train=True)
            trainer.train_minibatch(dict(zip((image, rois, classes, deltas, weights), inputs)))
            losses.append(trainer.previous_minibatch_loss_average)
            errors.append(trainer.previous_minibatch_evaluation_average)
        curve.append((epoch, float(np.mean(losses)), float(np.mean(errors))))
        print("epoch %2d/%d  loss %.4f  region error %.3f" % ((epoch + 1, epochs) + curve[-1][1:]))
    trainer.save_checkpoint(checkpoint, {"epoch": epochs})
    model.save(os.path.join(args.out, "model.cntk"))
    with open(os.path.join(args.out, "loss.csv"), "w") as out:
        out.write("epoch,loss,region_error\n")
        out.writelines("%d,%.6f,%.4f\n" % point for point in curve)

    detections = []
    for scene in test:
        test_image, test_rois = batch([scene], rng, train=False)[:2]
        outputs = model.eval({image: test_image, rois: test_rois})
        detections.append(detect(outputs[scores.output][0], outputs[regression.output][0], test_rois[0]))
    with open(os.path.join(args.out, "detections.csv"), "w") as out:
        out.write("image,class,score,x1,y1,x2,y2\n")
        for index, found in enumerate(detections):
            for kind, score, box in found:
                out.write("%d,%s,%.3f,%s\n" % (index, shapes.CLASSES[kind], score,
                                                ",".join("%.1f" % v for v in box)))
    precisions = [average_precision(detections, test, k) for k in range(len(shapes.CLASSES))]
    for name, value in zip(shapes.CLASSES, precisions):
        print("AP %-8s %.3f" % (name, value))
    print("FINAL mAP=%.4f" % np.mean(precisions))


if __name__ == "__main__":
    main()
