"""The CUDA fast path: the whole row loop of a synthesis replayed from one CUDA graph.

The incremental engine does little arithmetic per kernel at batch 1 (one row of one layer),
so eagerly it is bound by the CPU launching ~10 kernels per layer per row: 8 flows x h rows
x 8 layers. Here that loop (all flows, all rows, conditioning projections included) is
captured once per (batch, width bucket, precision) into a CUDA graph and replayed: one
launch per synthesis. Everything it touches is preallocated: static inputs (z, the
conditioning rows, the column mask), the row rings, the hidden-state stack and the output,
plus the intermediates the capture allocated from the graph's private memory pool.

Shapes. Widths (T / h columns) are rounded up to a bucket (`bucket_width`: at most 63
columns or 1/8 more, whichever is larger) so a handful of graphs serve every length; at
most `max_graphs` are kept (least recently used dropped; all of them when a new capture
runs out of memory).

Padding is exact. Batches pad every item to the longest (outputs trimmed per item), and
buckets pad further. The width convolutions are non-causal, so near an item's end they
would read whatever lies in the padding; instead the column mask zeroes every layer's
input beyond the item's real width, which is exactly the zero padding those convolutions
see when the item runs alone. So neither batching nor bucketing changes the audio (beyond
float rounding), and what the padded columns contain never matters.

Fusion (`fuse=True`): the elementwise work of a step (conditioning add + tanh * sigmoid
gate; residual add + mask; the affine or spline inverse) is compiled with `torch.compile`
into a few kernels, cutting the kernels per layer-row from about 10 to about 4 (the convs
stay cuDNN/cuBLAS). It is optional: if compiling fails, the graph is captured with the
plain kernels; if capture fails, the eager incremental path runs. The first graph of a
runner at batch 1 and the first at a larger batch (compiled separately: dynamic shapes
specialize size 1) are each checked once against the eager path (relative L2 error) before
they are trusted.

Fallback (`vocoder.inference.engine.make_row_inverse` chooses): on the CPU
`vocoder.inference.cpu.GemmRowInverse` (the GEMM rows, in fp32 and bf16); without CUDA
graph support (or fast=False), `vocoder.inference.incremental.IncrementalInverse`.
"""

from __future__ import annotations

import logging
import types
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from vocoder.flows.coupling import Elementwise
from vocoder.flows.squeeze import squeeze, unsqueeze
from vocoder.inference.compile import RowFlows
from vocoder.inference.incremental import IncrementalInverse, RowBuffers, StepKernels

log = logging.getLogger(__name__)

MIN_BUCKET = 64  # columns


def graphs_available(device: torch.device) -> bool:
    """Whether CUDA graphs can run on `device`."""
    return device.type == "cuda" and torch.cuda.is_available() and hasattr(torch.cuda, "CUDAGraph")


def bucket_width(width: int) -> int:
    """`width` rounded up to a multiple of max(64, 2^(bits - 4)): at most 63 columns more,
    or 1/8 more from 512 columns on."""
    step = max(MIN_BUCKET, 1 << max(0, width.bit_length() - 4))
    return -(-width // step) * step


def fused_kernels(elementwise: Elementwise, backend: str = "inductor") -> StepKernels:
    """Step kernels compiled with `torch.compile` (each fuses into one or a few kernels).

    Compiled whole (`fullgraph=True`), so a host sync or graph break in them fails loudly
    instead of splitting the captured loop; with dynamic shapes, in code objects of their
    own (see `_own_code`). `backend`: the `torch.compile` backend ("aot_eager" traces them
    the same way without generating code, as a CPU test does).
    """

    def gate(a: Tensor, proj: Tensor, out: Tensor) -> None:
        c = out.shape[1]
        s = a + proj
        out.copy_(torch.tanh(s[:, :c]) * torch.sigmoid(s[:, c:]))

    def residual(h: Tensor, res: Tensor, pad: Tensor | None, out: Tensor) -> None:
        total = h + res
        if pad is not None:
            total = total.masked_fill(pad, 0.0)
        out.copy_(total)

    def finish(y: Tensor, params: Tensor) -> Tensor:
        return elementwise.inverse(y, params)[0]

    def compile_(fn: Callable) -> Callable:
        compiled = torch.compile(_own_code(fn), fullgraph=True, dynamic=True, backend=backend)

        def call(*args: Tensor | None) -> Tensor | None:
            # no duck sizing: sizes, strides and offsets that happen to be equal in the first
            # call (at batch 1, a ring slot's offset equals a ring's stride) would otherwise
            # be guarded equal, and each such coincidence costs a recompile and an entry
            with torch.fx.experimental._config.patch(use_duck_shape=False):
                return compiled(*args)

        return call

    return StepKernels(compile_(gate), compile_(residual), compile_(finish))


def _own_code(fn: Callable) -> Callable:
    """`fn` with a code object of its own.

    Dynamo keeps compiled entries per code object and, under fullgraph=True, fails hard once
    a code object has `recompile_limit` (8) of them; a new shape, dtype or elementwise map
    adds one. Shapes are compiled dynamic (one entry serves every width and batch > 1, one
    batch 1), and each set of fused kernels gets its own code objects, so the runners of
    other models and precisions in the same process never use up its entries.
    """
    return types.FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )


@dataclass
class CapturedRun:
    """The static buffers of one captured shape and how to replay it."""

    z: Tensor  # [B, h, Wb] float32, static input
    cond: Tensor  # [n_mels, h, B, Wb], static input
    keep: Tensor  # [B, 1, Wb] bool, static input
    buffers: RowBuffers  # working memory; buffers.x is the output
    replay: Callable[[], None]
    graph: object = None  # the torch.cuda.CUDAGraph (kept alive with its memory pool)


def relative_error(a: Tensor, b: Tensor) -> float:
    """||a - b|| / ||b|| in float64 (0 when both are 0)."""
    a, b = a.double(), b.double()
    norm = b.norm().item()
    return (a - b).norm().item() / norm if norm > 0 else (a - b).norm().item()


class GraphedRowInverse:
    """`IncrementalInverse` replayed from CUDA graphs; same call contract.

    `fuse`: compile the step's elementwise work (see the module docstring).
    `max_graphs`: graphs (and their memory pools) kept at once.
    """

    def __init__(self, rows: RowFlows, fuse: bool = True, max_graphs: int = 4):
        self.rows = rows
        self.eager = IncrementalInverse(rows)
        self.fuse = fuse
        self.inverse = self._make_inverse()
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[tuple[int, int], CapturedRun] = OrderedDict()
        self.verified = False  # some graph matched the eager path
        self._checked: set[bool] = set()  # batch == 1 of the graphs that did
        self.disabled = False  # set when graphs cannot be used: everything runs eagerly

    def _make_inverse(self) -> IncrementalInverse:
        if not self.fuse:
            return self.eager
        try:
            return IncrementalInverse(self.rows, fused_kernels(self.rows.elementwise))
        except Exception as e:  # torch.compile unavailable (no triton, ...)
            log.warning("fused kernels unavailable (%s); using plain kernels", _short(e))
            self.fuse = False
            return self.eager

    def _fall_back(self, reason: str) -> None:
        """Fused graphs failed: try plain-kernel graphs; plain ones failed: go eager."""
        self.graphs.clear()
        self._checked.clear()
        self.verified = False
        if self.fuse:
            log.warning("fused CUDA graph path failed (%s); retrying with plain kernels", reason)
            self.fuse = False
            self.inverse = self.eager
        else:
            log.warning("CUDA graph path failed (%s); using the eager incremental path", reason)
            self.disabled = True

    @torch.no_grad()
    def __call__(self, z: Tensor, cond: Tensor, lengths: list[int] | None = None) -> Tensor:
        """Audio `[B, T]` for z `[B, T]` and conditioning `[B, n_mels, T]` (see
        `IncrementalInverse.__call__`)."""
        while not self.disabled:
            try:
                out = self._replay(z, cond, lengths)
            except torch.OutOfMemoryError:
                if not self.graphs:
                    raise
                # other shapes' graphs hold memory pools: drop them and try once more
                self.graphs.clear()
                torch.cuda.empty_cache()
                continue
            except Exception as e:  # capture can fail in many ways; never lose the synthesis
                self._fall_back(_short(e))
                continue
            single = z.shape[0] == 1
            if single in self._checked:
                return out
            reference = self.eager(z, cond, lengths)
            tolerance = 1e-3 if self.rows.dtype == torch.float32 else 2e-2
            error = relative_error(*(_real(t, lengths) for t in (out, reference)))
            if error <= tolerance:
                self._checked.add(single)
                self.verified = True
                return out
            self._fall_back(f"relative error {error:.2e} against the eager path")
        return self.eager(z, cond, lengths)

    def _replay(self, z: Tensor, cond: Tensor, lengths: list[int] | None) -> Tensor:
        h = self.rows.n_group
        device = self.rows.device
        z_sq = squeeze(z.to(device, torch.float32), h)
        batch, _, width = z_sq.shape
        padded = bucket_width(width)
        entry = self._graph(batch, padded)
        entry.z[..., :width].copy_(z_sq)
        entry.z[..., width:].zero_()
        entry.cond[..., :width].copy_(squeeze(cond.to(device), h).permute(1, 2, 0, 3))
        entry.cond[..., width:].zero_()
        columns = [n // h for n in lengths] if lengths is not None else [width] * batch
        limits = torch.tensor(columns, device=device)
        entry.keep.copy_((torch.arange(padded, device=device) < limits[:, None])[:, None, :])
        entry.replay()
        return unsqueeze(entry.buffers.x[..., :width]).clone()

    def _graph(self, batch: int, width: int) -> CapturedRun:
        key = (batch, width)
        if key in self.graphs:
            self.graphs.move_to_end(key)
            return self.graphs[key]
        while len(self.graphs) >= self.max_graphs:
            self.graphs.popitem(last=False)
        entry = self._capture(batch, width)
        self.graphs[key] = entry
        return entry

    def static_inputs(self, batch: int, width: int) -> tuple[Tensor, Tensor, Tensor, RowBuffers]:
        """Zeroed static z, conditioning rows, column mask and working buffers."""
        r = self.rows
        device = r.device
        z = torch.zeros(batch, r.n_group, width, device=device, dtype=torch.float32)
        cond = torch.zeros(r.config.n_mels, r.n_group, batch, width, device=device, dtype=r.dtype)
        keep = torch.ones(batch, 1, width, device=device, dtype=torch.bool)
        return z, cond, keep, self.inverse.allocate(batch, width)

    def _capture(self, batch: int, width: int) -> CapturedRun:
        device = self.rows.device
        if not graphs_available(device):
            raise RuntimeError(f"CUDA graphs need a CUDA device, not {device}")
        with torch.cuda.device(device):
            z, cond, keep, buffers = self.static_inputs(batch, width)
            # warm up on a side stream (cuDNN/cuBLAS set-up, torch.compile) before capture
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                self.inverse.run(buffers, z, cond, keep)
            torch.cuda.current_stream(device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            # thread_local: CUDA work of other threads (another Synthesizer, say) may go on
            # during the capture without invalidating it or failing itself
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.inverse.run(buffers, z, cond, keep)
        log.debug("captured a CUDA graph for batch %d, width %d", batch, width)
        return CapturedRun(z, cond, keep, buffers, graph.replay, graph)


def _real(audio: Tensor, lengths: list[int] | None) -> Tensor:
    """The items' real samples, concatenated (what lies beyond a length is meaningless)."""
    if lengths is None:
        return audio.flatten()
    return torch.cat([a[:n] for a, n in zip(audio, lengths, strict=True)])


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


__all__ = [
    "CapturedRun",
    "GraphedRowInverse",
    "bucket_width",
    "fused_kernels",
    "graphs_available",
    "relative_error",
]
