"""Files other processes and other people may touch: the bottom layer, importing nothing of hgbench but errors.

- `atomic_io`: writes that are whole or absent (temp file, fsync, rename), never through a planted link; numbered
  records never overwritten; appends opened ``O_NOFOLLOW``.
- `bounded_read`: reads of files from strangers (records, markers, notes) that are regular files only, non-blocking,
  size- and depth-bounded.
- `claim`: one process trains a run at a time (an OS lock on ``claim.lock``), and every other one can say which.
"""
