#!/usr/bin/env python3
"""The Python side of `privxray bench preprocess`: the paper's two preprocessing techniques with
Pillow and OpenCV on the same folder of images, with the same number of workers.

    python3 scripts/preprocess_reference.py --dir DIR --workers N [--count K] [--runs R]

Each configuration runs once untimed (warm-up: page cache, imports, pool start), then R timed
runs; images/s is the image count over the median run. Every method ends with the array privxray
produces: u8, C x H x W (technique 1: 1x150x125; technique 2: 3x224x224, a grey source resized
once and replicated, as privxray does). Scaling to [0, 1] floats is timed on neither side.

- technique 1, pillow: convert("L"), resize((125, 150), BILINEAR): Pillow's antialiased
  triangle filter, the filter privxray uses.
- technique 1, pillow-draft: the same after draft("L", (250, 300)): libjpeg decodes at 1/2, 1/4
  or 1/8 scale keeping at least twice the target, privxray's `reduced` decoding policy (with
  --gap 1: draft("L", (125, 150)), at least the target, privxray's `draft` policy).
- technique 2, opencv: imread (grey when the file is grey), resize((224, 224), INTER_CUBIC):
  OpenCV's cubic (a = -0.75) is NOT antialiased: it reads 4x4 source pixels per output pixel
  whatever the downscale, so it does less work than privxray and gives other values.
- technique 2, opencv-reduced: the same from imread's IMREAD_REDUCED_*_{2,4,8} (libjpeg scaled
  decoding), the largest reduction keeping at least 448x448 (224x224 with --gap 1).
- technique 2, pillow and pillow-draft: resize((224, 224), BICUBIC): Pillow's antialiased
  Catmull-Rom (a = -0.5), the filter privxray uses; draft as for technique 1 (at least 448x448,
  or 224x224 with --gap 1).

With --workers 1 everything runs in this process; otherwise a multiprocessing pool of that many
processes is started before the warm-up and each worker returns only a checksum (no arrays are
sent back).
"""

import argparse
import os
import statistics
import sys
import time
from multiprocessing import Pool

import cv2
import numpy as np
from PIL import Image

EXTENSIONS = {".jpg", ".jpeg", ".png"}
T1_SIZE = (125, 150)  # width, height
T2_SIZE = (224, 224)
GAP = 2


def t1_pillow(path, draft=False):
    with Image.open(path) as im:
        if draft:
            im.draft("L", (T1_SIZE[0] * GAP, T1_SIZE[1] * GAP))
        g = im.convert("L").resize(T1_SIZE, Image.BILINEAR)
    return np.asarray(g, dtype=np.uint8)[None]


def t2_pillow(path, draft=False):
    with Image.open(path) as im:
        if draft:
            im.draft(im.mode if im.mode in ("L", "RGB") else "RGB", (T2_SIZE[0] * GAP, T2_SIZE[1] * GAP))
        if im.mode in ("L", "I;16", "I"):
            plane = np.asarray(im.convert("L").resize(T2_SIZE, Image.BICUBIC), dtype=np.uint8)
            return np.repeat(plane[None], 3, axis=0)
        rgb = np.asarray(im.convert("RGB").resize(T2_SIZE, Image.BICUBIC), dtype=np.uint8)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def _probe(path):
    """(the largest libjpeg reduction 1, 2, 4 or 8 keeping at least GAP x the target, grey?)"""
    with Image.open(path) as im:
        (w, h), grey = im.size, im.mode == "L"
    for f in (8, 4, 2):
        if -(-w // f) >= T2_SIZE[0] * GAP and -(-h // f) >= T2_SIZE[1] * GAP:
            return f, grey
    return 1, grey


GREY_FLAGS = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
              4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
COLOUR_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def t2_opencv(path, reduced=False):
    if reduced:
        # The header is read once more to choose the reduction (privxray reads it too).
        f, grey = _probe(path)
        img = cv2.imread(path, GREY_FLAGS[f] if grey else COLOUR_FLAGS[f])
    else:
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)  # a grey JPEG stays one plane
    if img is None:
        raise ValueError(f"{path}: OpenCV cannot read it")
    if img.ndim == 2:
        plane = cv2.resize(img, T2_SIZE, interpolation=cv2.INTER_CUBIC)
        return np.repeat(plane[None], 3, axis=0)
    rgb = cv2.cvtColor(cv2.resize(img[..., :3], T2_SIZE, interpolation=cv2.INTER_CUBIC),
                       cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


METHODS = {
    ("1", "pillow"): lambda p: t1_pillow(p),
    ("1", "pillow-draft"): lambda p: t1_pillow(p, draft=True),
    ("2", "opencv"): lambda p: t2_opencv(p),
    ("2", "opencv-reduced"): lambda p: t2_opencv(p, reduced=True),
    ("2", "pillow"): lambda p: t2_pillow(p),
    ("2", "pillow-draft"): lambda p: t2_pillow(p, draft=True),
}
SHAPES = {"1": (1, 150, 125), "2": (3, 224, 224)}


def work(args):
    global GAP
    key, paths, GAP = args  # set in each worker too: a forkserver pool does not inherit it
    fn = METHODS[key]
    total = 0
    for p in paths:
        out = fn(p)
        if out.shape != SHAPES[key[0]] or out.dtype != np.uint8:
            raise ValueError(f"{p}: {key} gave {out.shape} {out.dtype}")
        total += int(out[0, 0, 0])
    return total


def list_images(root):
    files = []
    for d, _, names in os.walk(root):
        files += [os.path.join(d, n) for n in names if os.path.splitext(n)[1].lower() in EXTENSIONS]
    if not files:
        sys.exit(f"no JPEG or PNG files under {root}")
    return sorted(files)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, help="folder of images, read recursively")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (default: all cores)")
    ap.add_argument("--count", type=int, help="the first K images by path (default: all)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up (median reported)")
    ap.add_argument("--gap", type=int, choices=(1, 2), default=2,
                    help="the draft and reduced methods keep at least GAP x the target: 2 is privxray's "
                         "`reduced` decoding, 1 its `draft` (default: 2)")
    ap.add_argument("--only", help="comma-separated methods, e.g. pillow,opencv (default: all)")
    args = ap.parse_args()
    files = list_images(args.dir)[: args.count]
    cv2.setNumThreads(1)  # one thread per worker, as privxray's pool has one per thread
    keys = [k for k in METHODS if not args.only or k[1] in args.only.split(",")]
    size = sum(os.path.getsize(f) for f in files) / len(files) / 1024
    print(f"{len(files)} images from {args.dir} ({size:.0f} KB on average), {args.workers} worker(s), "
          f"median of {args.runs} runs after a warm-up, draft/reduced gap {args.gap}; Pillow {Image.__version__}, OpenCV {cv2.__version__}")
    pool = Pool(args.workers) if args.workers > 1 else None
    for key in keys:
        if pool is None:
            jobs = [(key, files, args.gap)]
            run = lambda: [work(j) for j in jobs]
        else:
            n = args.workers * 4
            jobs = [(key, files[i::n], args.gap) for i in range(n)]
            run = lambda: pool.map(work, jobs, chunksize=1)
        run()
        secs = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            run()
            secs.append(time.perf_counter() - t0)
        med = statistics.median(secs)
        print(f"technique {key[0]}, {key[1]}, {args.workers} worker(s): {len(files) / med:.1f} images/s "
              f"(median of {args.runs} runs over {len(files)} images; runs {min(secs):.3f}-{max(secs):.3f} s)")
    if pool is not None:
        pool.close()


if __name__ == "__main__":
    main()
