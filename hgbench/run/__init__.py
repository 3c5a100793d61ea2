"""One run from start to record, and the store of records it writes.

- `runner`, `run_setup`: ``hgbench run``'s pipeline (claim the run, resume it or start it, the epoch loop, how it
  stops) and what comes before its first epoch.
- `plan`: everything a run resolves once before a step is taken (device, settings, data, identity).
- `state`: the network, optimiser and schedule, built fresh or restored from a checkpoint.
- `recorder`, `record`, `run_summary`: the run record (``hgbench.run/1``, docs/record.md), owned by one object and
  written with the checkpoint atomically; its schema and validation; the `RunSummary` readers use.
- `final_pass`: the end of a finished run on rank 0 (the timed inference pass, plain and flipped).
- `failures`, `progress`: how a run that stops early says why in one line, and what it shows while it works.
- `results`: the results store under ``results/`` (finding, reading and validating records).
- `scoring`, `reproduce`: scoring a saved checkpoint, and checking published weights against published figures.
- `bench`: the model-only speed benchmark, which reuses the run's pieces on synthetic tensors.
"""
