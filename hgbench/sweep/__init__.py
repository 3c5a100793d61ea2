"""`hgbench sweep`'s machinery: many runs spread over an engine people already operate (local, Ray, Slurm).

- `hgbench.sweep.plan`: the runs, from the grid flags or a TOML plan file (each as `hgbench run` settings).
- `hgbench.sweep.worker`: `run_one`, what every engine runs for one run (it writes the record itself).
- `hgbench.sweep.engines`: the local, Ray and submitit engines behind one `Engine` protocol (the submitit one in
  `hgbench.sweep.submitit_engine`); what a Slurm job asks for in `hgbench.sweep.slurm`.
- `hgbench.sweep.watch`: progress read back from the records the workers write.
- `hgbench.sweep.driver`: skip, submit, follow, retry, cancel.
- `hgbench.sweep.view`: the live table or log lines, the summary and the comparison table.
- `hgbench.sweep.estimate`: what a planned sweep costs (``--dry-run``), from earlier records of the same settings.
"""
