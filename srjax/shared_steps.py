"""Steps that take a finished result from another run directory instead of recomputing it.

A sweep member whose pseudo labels, stage-2 or stage-3 weights another member has
already made takes them from that member: the stage-1 record is copied and the label
volume linked; the training checkpoint at this member's last step is hard-linked
(copied where links cannot be made). The member's run directory is then what it would
be had it done the work itself, and every later step runs as usual.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from srjax import parallel, rundir, stages, train
from srjax.errors import SrjaxError
from srjax.outputs import atomic_path


def _link_tree(source: Path, target: Path) -> None:
    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    with atomic_path(target) as tmp:
        shutil.copytree(source, tmp, copy_function=link)


class LinkedPseudoLabels(stages.PseudoLabels):
    """Stage 1, or a link to the pseudo labels of the run directory ``source``."""

    def __init__(self, source: Path | None):
        self.source = None if source is None else rundir.RunDir(source)

    def run(self, ctx: stages.Context) -> None:
        if self.source is None:
            return super().run(ctx)
        parallel.on_main(lambda: self.link(ctx))

    def link(self, ctx: stages.Context) -> None:
        if not (self.source.stage1.exists() and self.source.pseudo_labels.exists()):
            raise SrjaxError(f"{self.source.root} has no pseudo labels to share; run it first")
        with atomic_path(ctx.run.pseudo_labels) as tmp:
            os.symlink(os.path.relpath(self.source.pseudo_labels, ctx.run.root), tmp)
        with atomic_path(ctx.run.stage1) as tmp:  # last: it marks the step done
            shutil.copyfile(self.source.stage1, tmp)


class _TakenTraining:
    """A training stage, or the checkpoint at this member's last step from the run directory
    ``source``. Mixed into a stage's class ahead of it."""

    def __init__(self, source: Path | None, keep_steps=()):
        super().__init__(keep_steps)
        self.source = None if source is None else rundir.RunDir(source)

    def run(self, ctx: stages.Context) -> None:
        if self.source is None:
            return super().run(ctx)
        parallel.on_main(lambda: self.link(ctx))

    def link(self, ctx: stages.Context) -> None:
        total = self.total_steps(ctx)
        checkpoint = self.source.checkpoints(self.name) / str(total)
        if not checkpoint.is_dir():
            raise SrjaxError(f"{self.source.root} kept no {self.name} checkpoint at step {total}; run it first")
        ctx.run.checkpoints(self.name).mkdir(parents=True, exist_ok=True)
        _link_tree(checkpoint, ctx.run.checkpoints(self.name) / str(total))
        if train.latest_step(ctx.run.checkpoints(self.name)) != total:
            raise SrjaxError(f"the {self.name} checkpoint taken from {checkpoint} cannot be read; rerun the sweep")


class SharedStage2(_TakenTraining, stages.Stage2):
    """Stage 2, or the checkpoint at this member's last step from the run directory ``source``."""


class SharedStage3(_TakenTraining, stages.Stage3):
    """Stage 3, or the checkpoint at this member's last step from the run directory ``source``
    (members that differ only in how the volume is labelled afterwards, or in stage-3 duration)."""
