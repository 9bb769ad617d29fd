"""Generated images of shapes (squares, discs, triangles) for the CNN and detector examples.

Imported by cnn.py and fast_rcnn.py; upload it beside them:
`cogbox run --image cntk --upload shapes.py cnn.py`.
"""
from __future__ import division

import numpy as np

CLASSES = ("square", "disc", "triangle")


def draw(image, kind, top, left, size, value):
    """Draw one shape of `kind` (an index into CLASSES) into `image` (H, W), in place."""
    rows, cols = np.mgrid[0:size, 0:size]
    if kind == 0:
        mask = np.ones((size, size), dtype=bool)
    elif kind == 1:
        centre = (size - 1) / 2.0
        mask = (rows - centre) ** 2 + (cols - centre) ** 2 <= (size / 2.0) ** 2
    else:
        centre = (size - 1) / 2.0
        mask = np.abs(cols - centre) <= rows / 2.0 + 0.5  # apex at the top, base at the bottom
    window = image[top:top + size, left:left + size]
    window[mask[:window.shape[0], :window.shape[1]]] = value


def single(count, side, rng):
    """`count` images (count, 1, side, side) holding one shape each, and their labels."""
    images = 0.1 * rng.rand(count, 1, side, side)
    labels = rng.randint(0, len(CLASSES), size=count)
    for i, kind in enumerate(labels):
        size = rng.randint(side // 2, side - 2)
        top, left = rng.randint(0, side - size + 1, size=2)
        draw(images[i, 0], kind, top, left, size, 0.6 + 0.4 * rng.rand())
    return images.astype(np.float32), labels


def scene(side, rng, most=3):
    """One image (1, side, side) with 1..most shapes that do not overlap, and their boxes.

    Boxes are (x1, y1, x2, y2) in pixels, inclusive-exclusive; labels index CLASSES.
    """
    image = 0.1 * rng.rand(1, side, side)
    boxes, labels = [], []
    for _ in range(20 * most):
        if len(boxes) == rng.randint(1, most + 1) or len(boxes) == most:
            break
        size = rng.randint(side // 6, side // 3)
        top, left = rng.randint(0, side - size, size=2)
        box = (left, top, left + size, top + size)
        if any(iou(box, other) > 0 or _touches(box, other) for other in boxes):
            continue
        kind = rng.randint(0, len(CLASSES))
        draw(image[0], kind, top, left, size, 0.6 + 0.4 * rng.rand())
        boxes.append(box)
        labels.append(kind)
    return image.astype(np.float32), np.array(boxes, dtype=np.float32), np.array(labels)


def iou(a, b):
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _touches(a, b, margin=2):
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0]
                or a[3] + margin <= b[1] or b[3] + margin <= a[1])
