"""Scoring poses: from heatmaps to joints, and from joints to the study's accuracy figures.

- `metrics`: heatmap accuracy and MPII PCKh (with the PCKh Mean's bootstrap over people and the paired bootstrap),
  pure numpy, checked against the official evaluation.
- `decoding`: heatmaps to joints on the device (quarter-pixel peaks, the flip test, the mapping back to the image),
  and the publisher's decoding for ``--convention anibali``.
- `predictions`: predictions files (``.mat``/``.npy``, bounded before reading) and PCKh results as a table, CSV or JSON.
- `visualize`: pictures of predicted and true skeletons over the image.

Scoring a saved checkpoint and reproducing published figures plan their data as a run does, so they live in
`hgbench.run`.
"""
