"""How every figure is measured: clocks, the GPU's telemetry, the machine's load and what it is.

- `timing`: per-iteration timing and the per-epoch `StepTimer` (data wait apart from compute; CUDA events on a GPU,
  never a host sync inside the batch loop), and peak memory.
- `nvml`, `nvml_device`: a background sampler of one GPU's utilisation, memory, power and energy (MIG slices told
  apart), and NVML's access and a GPU's state at one instant.
- `contention`: how busy the machine was while a run measured itself (other processes' CPU share, steal, the
  contended mark).
- `host_memory`: the process's peak resident memory.
- `environment`: machine facts, software versions and the git commit a record names, and the machine's folder name.
- `compile_watch`: what ``torch.compile`` compiled and what ran eagerly, from dynamo's own counters.
- `stats`: summaries with pytest-benchmark's names and the bootstrap every interval uses.
"""
