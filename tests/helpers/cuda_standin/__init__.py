"""A CUDA stand-in for machines without a GPU: the real `hgbench run --device cuda` pipeline on the CPU, under CUDA's
rules.

Every line of hgbench that only runs on CUDA must run in `make test` on a CPU, so that a defect there fails a test the
moment it is written. `CudaStandin.install` makes the process look like one with `device_count` GPUs:

- **torch.cuda's own Python code runs**, with only the C bindings under it (``torch._C._cuda_*``) answered by the
  stand-in: ``set_device(torch.device("cuda"))`` raises exactly as on a GPU, because torch's `_get_device_index`
  does. Only what has no Python layer is replaced whole: `torch.cuda.Stream` and `torch.cuda.Event` (C types), the
  device properties, and torchvision's nvjpeg decode (a CUDA kernel).
- **Tensors on "cuda:N" are CPU tensors that say they are on cuda:N** (a `TorchFunctionMode` tags each one and
  answers ``.device``/``.is_cuda`` for it), so the run really computes and trains and its numbers are real (CPU)
  numbers. An op that mixes devices fails as on a GPU: two GPUs, or a GPU tensor and a host tensor of one or more
  dimensions (a host 0-d tensor is a scalar and allowed, as CUDA allows it). With ``torch.autocast("cuda")`` on, the
  ops run under the CPU's autocast of the same dtype.
- **Host reads and uploads**: a read of a GPU value on the host (``item``, ``float``, ``bool``, ``tolist``, ``cpu``,
  a copy to host memory that is not ``non_blocking`` into pinned memory, a boolean-mask index) and a synchronous
  upload are errors inside a batch loop (any `StepTimer.iter_data` loop, between its first batch and its end), and
  ``torch.cuda.synchronize``, ``Event.synchronize``/``elapsed_time`` too. A ``non_blocking`` upload from pageable
  memory is an error anywhere (it is silently synchronous on a GPU). ``pin_memory`` is tracked per storage. Every
  host synchronisation, in a loop or not, is kept in ``host_syncs`` (a boolean-mask index and
  ``torch.tensor(data, device="cuda")`` included), so a test can count them per step.
- **Autograd**: the ``backward`` of a Python `torch.autograd.Function` runs under the stand-in too (the engine would
  run it outside the tensor mode), and `nn.SyncBatchNorm`'s CUDA-only kernels run on the CPU (`standin_kernels`).
- **Streams**: every GPU tensor remembers the stream that produced it; using it on another stream without an event
  wait or ``wait_stream`` since is an error, and so is freeing a block on its own stream while another stream used it,
  unless ``record_stream`` was called or the freeing stream waited. The GPU is taken to be infinitely slow (an
  event's ``query`` is False until the host synchronised): the most adversarial legal schedule. torchvision's CUDA
  JPEG decoder is modelled as it is (pytorch/vision PR 9606): it allocates its outputs on the current stream and
  writes them from a stream of its own that does not wait for the current one, so decoding while the current stream
  has freed blocks that its queued work may still read is an error. Like torchvision, it synchronises its own stream
  before and after decoding: the host is blocked for the decode (recorded, not an error: hgbench cannot avoid it).
- ``torch.compile`` runs the model eagerly, but its first call with a GPU tensor builds a C extension through
  Triton's own build code, as Triton builds its launcher on a GPU: a host without a C compiler or ``Python.h`` fails
  there as it would with a GPU.
- NVML answers through `helpers.fake_nvml` with the device's PCI bus id; the device's name says it is a stand-in, so
  its records (machine id ``...-cuda-stand-in...``) can never be pooled with a measurement.

`StandinViolation` is raised where the rule is broken and also kept in `violations` (a caller may catch broad errors):
the fixture fails the test on any violation at teardown.

The package, one job a module: `device` (the stand-in GPUs, installed into torch), `streams` (the stream, allocation
and host-sync rules), `stream_types` (`torch.cuda.Stream` and `Event`), `tensor_mode` (the tensors "on cuda:N"),
`compiling` (torch.compile), `nccl` (a process group as NCCL's), `fixture` (`cuda_standin`).
"""

from helpers.cuda_standin.device import STANDIN_GPU_NAME, CudaStandin
from helpers.cuda_standin.fixture import cuda_standin
from helpers.cuda_standin.nccl import NcclLikeGroup
from helpers.cuda_standin.streams import StandinViolation

__all__ = ["STANDIN_GPU_NAME", "CudaStandin", "NcclLikeGroup", "StandinViolation", "cuda_standin"]
