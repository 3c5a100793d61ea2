"""Training and predicting: the loops, how fast they may run, and what is kept between epochs.

- `training`, `loss`: one training epoch (data wait and compute timed apart, no host sync inside the batch loop) and
  the intermediate supervision over every stack.
- `inference`: the per-epoch validation and the timed inference pass (warm, plain and flipped).
- `distributed`, `sampling`: DDP under ``torchrun`` (process group, synchronised BatchNorm, gathers) and a data order
  that is a function of (seed, epoch) alone on any number of processes.
- `speed_modes`, `compile_probe`, `mode_probe`, `workload`: the ladder of speed settings, whether ``torch.compile``
  works on this GPU, ``--fast``'s measured choice on the CPU, and one case's synthetic step that both time.
- `checkpoint`: everything needed to resume a run or evaluate its model, written atomically, read ``weights_only``.
"""
