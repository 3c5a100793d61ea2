"""One module per `hgbench` subcommand; each exposes `add_parser(subparsers)` and `cmd_<name>(args) -> int`.

- Running: `run` (one case), `sweep` (many runs over an engine), `bench` (model-only speed), `evaluate` (a checkpoint,
  predictions or published weights), `synth` (the embedded dataset), `data` (real MPII, fetched and checked).
- Reading records: `table`, `compare`, `plot`, `export` (to TensorBoard or MLflow), `list` (the cases).
- Shared: `_args` (argument types), `_stops` (what `run` prints when a run stops).
"""
