"""How much the way a volume is labelled matters: a finished run's stage-2 and stage-3
weights, re-applied to its volume whole-slice (in float32 and in bfloat16), in windows of
the training crop, and in windows averaged over the 8 dihedral views, each scored
against the run's ground truth.

  python tools/compare_inference.py RUN_DIR [RUN_DIR ...]

Prints, per run, stage and setting: mIoU, pixel accuracy, every class's IoU, the share
of voxels labelled otherwise than whole-slice float32, and the seconds the labelling
took; then the mean ± sd of each over the runs. The runs need
their ground truth (a phantom's, or ``--truth``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from srjax import io, metrics, train
from srjax.models import build_model
from srjax.predict import predict_volume
from srjax.rundir import open_run

SETTINGS = {"whole slice": (False, 1, "float32"), "whole slice, bf16": (False, 1, "bfloat16"),
            "windows": (True, 1, "float32"), "windows, 8 views": (True, 8, "float32")}


def compare(root) -> dict:
    """(stage, setting) -> (mIoU, accuracy, IoU per class, share changed, seconds) for one finished run."""
    run, config, record = open_run(root)
    stage1 = run.read(run.stage1)
    volume = io.open_volume(record["read_from"]["volume"], "volume")
    truth = io.read(io.open_volume(record["read_from"]["truth"], "truth")[...], "truth")
    model = build_model(config.model.name, stage1["classes"], config.model.width, config.model.dropout)
    mesh = train.make_mesh()
    found = {}
    for stage in ("stage2", "stage3"):
        params = train.latest_params(run.checkpoints(stage), train.prediction_key(stage, config))
        reference = None
        for setting, (tiled, views, precision) in SETTINGS.items():
            labels = np.zeros(volume.shape, np.uint8)
            start = time.perf_counter()
            predict_volume(model, params, volume, stage1["low"], stage1["high"], config.data.slices,
                           config.predict_batch, mesh, labels, window=config.data.crop if tiled else None,
                           views=views, precision=precision, progress=False)
            seconds = time.perf_counter() - start
            reference = labels if reference is None else reference
            score = metrics.score(metrics.confusion(labels, truth, stage1["classes"], int(truth.max()) + 1))
            found[stage, setting] = (score["miou"], score["pixel_accuracy"], list(score["iou"].values()),
                                     float(np.mean(labels != reference)), seconds)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    every = []
    for root in args.runs:
        every.append(compare(root))
        for (stage, setting), (miou, accuracy, ious, changed, seconds) in every[-1].items():
            print(f"{root}  {stage}  {setting:17}  mIoU {100 * miou:5.1f}  accuracy {100 * accuracy:5.1f}  "
                  f"IoU {' '.join(f'{iou:.3f}' for iou in ious)}  changed {100 * changed:.2f} %  {seconds:.1f} s")
    print(f"over {len(every)} run(s), mean ± sd:")
    for key in every[0]:
        mious = [100 * found[key][0] for found in every]
        sd = f" ± {np.std(mious, ddof=1):.1f}" if len(mious) > 1 else ""
        print(f"  {key[0]}  {key[1]:17}  mIoU {np.mean(mious):.1f}{sd}")


if __name__ == "__main__":
    main()
