"""Score a run's model on each of the 8 rotated/flipped views of every slice.

Stage 3's teacher labels weakly augmented (rotated/flipped) crops, so a stage-2 model
that is good only in the canonical orientation hands the student worse labels than
its canonical score suggests. This prints pixel accuracy and mIoU (without
background) per view, each prediction rotated back before scoring.

  python tools/view_consistency.py RUN_DIR [--stage stage2|stage3] [--volume V --truth T]

VOLUME and TRUTH default to the ones the run read (its run.json).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from srjax.augment import dihedral
from srjax.data import read_stack
from srjax.io import open_volume, read
from srjax.metrics import confusion, score
from srjax.models import build_model
from srjax.rundir import open_run
from srjax.train import latest_params, prediction_key

INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)  # the dihedral element that undoes each view
VIEWS = ("identity", "rot90", "rot180", "rot270", "flip-h", "flip-v", "transpose", "anti-transpose")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--volume", type=Path, help="default: the volume the run read")
    parser.add_argument("--truth", type=Path, help="default: the ground truth the run read")
    parser.add_argument("--stage", choices=("stage2", "stage3"), default="stage2")
    args = parser.parse_args()

    run, config, record = open_run(args.run)
    params = latest_params(run.checkpoints(args.stage), prediction_key(args.stage, config))
    stage1 = run.read(run.stage1)
    classes = stage1["classes"]
    model = build_model(config.model.name, classes, config.model.width, config.model.dropout)
    read_from = record.get("read_from") or {}
    volume = open_volume(args.volume or read_from["volume"], "--volume")
    truth = open_volume(args.truth or read_from["truth"], "--truth")
    truth = read(truth, "--truth")
    num_true = int(truth.max()) + 1
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x).argmax(-1))
    full = slice(None)
    print(f"{args.stage} of {args.run}: scores per view, without background")
    for index, name in enumerate(VIEWS):
        pred = np.empty(volume.shape, np.uint8)
        for z in range(volume.shape[0]):
            stack = jnp.asarray(read_stack(volume, z, config.data.slices, full, full, stage1["low"], stage1["high"]))
            labels = forward(params, dihedral(stack, index)[None])[0]
            pred[z] = np.asarray(dihedral(labels, INVERSE[index]))
        s = score(confusion(pred, truth, classes, num_true))
        print(f"{name:>15}  accuracy {100 * s['pixel_accuracy']:6.2f}%  mIoU {100 * s['miou']:6.2f}%")


if __name__ == "__main__":
    main()
