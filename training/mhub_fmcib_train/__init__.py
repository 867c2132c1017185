"""Training tree of mhub-fmcib: SimCLR pre-training with lesion negatives, fine-tuning,
linear probes and a synthetic lesion cohort.

Layout (after lightly): ``loss/`` (NT-Xent), ``transforms/`` (augmentations),
``models/`` (encoder factory, heads), ``optim/`` (LARC, schedules), ``utils/`` (dist,
checkpoints, logs), ``data/`` (lesion table, patch cache, datasets) and one module per
command (``pretrain``, ``finetune``, ``probe``, ``synthetic``); ``cli`` wires them.
"""

__all__: list[str] = []
