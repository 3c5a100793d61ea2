"""What a run is asked to be, as plain data: the case registry, variant files, the settings and the skeleton.

- `cases`: the eight cases of the study and hg1/hg2/hg8, each a `CaseSpec` (data, not a class), described and as built.
- `variants`: a user's own case from a ``.toml`` file, bounded and checked before anything is built.
- `footprint`: what a case's network will cost (parameters, activations) from its spec alone, before building it.
- `config`: `RunConfig`, every setting of one run, and the study's protocol defaults.
- `skeleton`: MPII's 16 joints, their names, flip pairs and limbs.
- `geometry`: the output stride (heatmaps at a quarter of the input).

Nothing here imports torch: the CLI lists and plans cases without it.
"""
