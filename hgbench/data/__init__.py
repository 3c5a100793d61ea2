"""The data: MPII's on-disk format, the datasets over it, and getting real MPII safely.

- `annotations`, `groundtruth`: MPII's annotation file and its ``detections_our_format.mat`` ground truth (head boxes,
  visibility), read with every size bounded.
- `mpii`, `loader`, `transforms`, `jpeg`, `device_decode`: the dataset, its loaders (workers, pinned memory, seeds), the
  crop transform and its exact inverse, JPEG decoding on the host or on the GPU (``--decode device``).
- `synthetic`, `figures`: the embedded default, a learnable synthetic dataset written in MPII's own format.
- `anibali`: the publisher's validation crop (``--convention anibali``).
- `download`, `partial_download`, `extract`, `verify`, `disk_room`, `dir_files`: `hgbench data mpii`, which fetches,
  resumes, bounds, unpacks and checks the real archive into a folder it claims.
"""
