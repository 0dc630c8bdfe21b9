"""Synchronous data-parallel training over MPI (mpi4py): the pieces ``fit(distributed=True)`` uses.

Started as ``mpiexec -n K python train.py``, every rank holds the same data and the same model;
each global batch (``batch_size`` samples, the same shuffled indices on every rank because the
shuffle generator has the same seed) is cut into K contiguous shares, one per rank. After the
backward pass one allreduce sums ``[grad * n_rank ..., buffer * n_rank ..., loss * n_rank,
correct]`` over the ranks, and dividing by the global batch size gives exactly the gradient and
loss one process computes on the whole batch (an uneven last batch included), so every rank
applies the same update. See docs/distributed.md.

Faults: a rank that raises while the others wait in a collective would hang the job, so inside
``fit`` / ``evaluate`` with ``distributed=True`` an exception raised on one rank prints that
rank's traceback and aborts the whole job (``MPI_Abort``). Errors that every rank raises at the
same point -- :class:`RanksDisagreeError` from the agreement checks, and
:class:`xpcnn.errors.NonFiniteError`, decided on the reduced values -- propagate normally.

mpi4py is imported only when a communicator is asked for; ``pip install -e '.[mpi]'``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import math
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .. import training
from ..backend import namespace_of, to_device, to_numpy
from ..errors import ArgumentTypeError, BackendUnavailableError, DataError, NonFiniteError
from ..layers.core import RandomLayer

INSTALL = "pip install -e '.[mpi]' (mpi4py and the mpich wheel, whose mpiexec lands in the environment's bin/)"
# World-size variables of the common launchers: set when a process was started as one rank of many.
_LAUNCHER_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")  # MPICH, Intel MPI and srun; Open MPI
TRANSPORTS = ("auto", "host", "nccl", "cuda-mpi")
_NCCL_ID_BYTES = 128  # sizeof(ncclUniqueId)


class RanksDisagreeError(DataError):
    """The ranks of a distributed run got different data or arguments; raised on every rank."""


# ---------------------------------------------------------------- the world


def _launched_size() -> int:
    for name in _LAUNCHER_SIZE:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


@functools.cache
def _world() -> Communicator | None:
    try:
        from mpi4py import MPI
    except ImportError:
        size = _launched_size()
        if size > 1:
            raise BackendUnavailableError(
                f"distributed=True: this process is one of {size} ranks started by an MPI launcher, "
                f"but mpi4py is not installed; {INSTALL}"
            ) from None
        return None
    comm = MPI.COMM_WORLD
    return Communicator(comm, MPI) if comm.Get_size() > 1 else None


def communicator(distributed: bool = True) -> Communicator | None:
    """The world communicator when ``distributed`` and this process is one of several MPI ranks;
    None otherwise (not distributed, not started by an MPI launcher, or a single rank), in which
    case training is exactly single-process training.

    Without mpi4py this is None, unless the environment says the process was started as one of
    several ranks: then :class:`xpcnn.errors.BackendUnavailableError` names the install command
    (running K unconnected copies would silently train K separate models)."""
    if not isinstance(distributed, (bool, np.bool_)):
        raise ArgumentTypeError(f"distributed: expected True or False, got {distributed!r:.80}")
    if not distributed:
        return None
    return _world()


def rank() -> int:
    """This process's rank among the MPI ranks (0 without MPI)."""
    world = _world()
    return 0 if world is None else world.rank


def size() -> int:
    """The number of MPI ranks (1 without MPI)."""
    world = _world()
    return 1 if world is None else world.size


@functools.cache
def local_rank() -> int:
    """This rank's index among the ranks on the same machine (0 without MPI): the GPU to use,
    e.g. ``xpcnn.set_backend(f"cupy:{local_rank()}")``. Collective the first time: call it on
    every rank."""
    world = _world()
    if world is None:
        return 0
    return world.comm.Split_type(world.MPI.COMM_TYPE_SHARED).Get_rank()


def _fingerprint(value: Any) -> int:
    """A process-independent 63-bit integer for ``value``: small ints as themselves, anything
    else (JSON-able values, NumPy arrays, lists of them) as a SHA-256 prefix."""
    if _same_when_integer(value):
        return int(value)
    h = hashlib.sha256()
    _feed(h, value)
    return int.from_bytes(h.digest()[:8], "little") >> 1


def _feed(h, value: Any) -> None:
    if isinstance(value, np.ndarray):
        h.update(json.dumps(["ndarray", value.dtype.str, list(value.shape)]).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (list, tuple)) and any(isinstance(v, np.ndarray) for v in value):
        h.update(f"list{len(value)}".encode())
        for v in value:
            _feed(h, v)
    else:
        h.update(json.dumps(value, sort_keys=True, default=str).encode())


def _same_when_integer(value: Any) -> bool:
    return isinstance(value, (bool, int, np.integer)) and -(2**62) < int(value) < 2**62


class Communicator:
    """An MPI communicator with the collectives data-parallel training needs. Only NumPy buffers
    (or device buffers with a GPU transport) cross between ranks: no pickled Python objects."""

    def __init__(self, comm, mpi_module) -> None:
        self.comm = comm
        self.MPI = mpi_module
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._nccl: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"Communicator(rank {self.rank} of {self.size})"

    # ---------------------------------------------------------------- shares of a batch

    def share(self, n: int) -> tuple[int, int]:
        """[start, stop) of this rank's contiguous share of ``n`` items: sizes differ by at most
        one, the larger shares on the higher ranks, and a share may be empty when n < K."""
        return self.rank * n // self.size, (self.rank + 1) * n // self.size

    def shard(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """This rank's contiguous slice of the global batch's index array ``idx``."""
        start, stop = self.share(len(idx))
        return idx[start:stop]

    # ---------------------------------------------------------------- agreement

    def agree(self, what: str, items: dict[str, Any]) -> None:
        """Check that every rank holds the same ``items`` (name -> int, str, JSON-able value or
        NumPy array); otherwise raise :class:`RanksDisagreeError` on every rank, naming each
        item that differs and, for integers, every rank's value. One Allgather of int64."""
        names = list(items)
        mine = np.array([_fingerprint(names)] + [_fingerprint(items[k]) for k in names], dtype=np.int64)
        every = np.empty((self.size, mine.size), dtype=np.int64)
        self.comm.Allgather(mine, every)
        if (every == every[0]).all():
            return
        if (every[:, 0] != every[0, 0]).any():
            raise RanksDisagreeError(f"{what}: the ranks reached different checks "
                                     "(different code or arguments on some ranks)")
        problems = []
        for j, name in enumerate(names, start=1):
            column = every[:, j]
            if (column == column[0]).all():
                continue
            if _same_when_integer(items[name]):
                values = ", ".join(f"rank {r} has {int(v)}" for r, v in enumerate(column))
                problems.append(f"{name}: {values}")
            else:
                groups: dict[int, list[int]] = {}
                for r, v in enumerate(column):
                    groups.setdefault(int(v), []).append(r)
                sides = " vs ".join("ranks " + ",".join(map(str, g)) for g in groups.values())
                problems.append(f"{name} differs between ranks ({sides})")
        raise RanksDisagreeError(f"{what}: every rank must pass the same data and arguments, but {'; '.join(problems)} "
                                 f"(this is rank {self.rank} of {self.size})")

    # ---------------------------------------------------------------- initial state from rank 0

    def broadcast_state(self, model, optimizer=None) -> None:
        """Give every rank rank 0's parameters, buffers and (when ``optimizer`` holds state) its
        optimizer state: one Bcast of the flattened host arrays, after agreeing on their layout."""
        keys = [key for key, _, _ in model.named_parameters() + model.named_buffers()]
        weights = [np.ascontiguousarray(to_numpy(w)) for w in model.get_weights()]
        buffers = [np.ascontiguousarray(to_numpy(b)) for b in model.get_buffers()]
        slots: list[tuple[str, str]] = []
        if optimizer is not None:
            slots = [(key, name) for key in sorted(optimizer.state) for name in sorted(optimizer.state[key])]
        state = [np.ascontiguousarray(to_numpy(optimizer.state[k][n])) for k, n in slots]
        arrays = weights + buffers + state
        self.agree("distributed training state", {
            "parameters and buffers": [keys, [list(a.shape) for a in weights + buffers], model.dtype],
            "optimizer": None if optimizer is None else [type(optimizer).__name__, optimizer.hyper(), optimizer.steps],
            "optimizer state": [slots, [list(a.shape) for a in state], [a.dtype.str for a in state]],
        })
        flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, dtype=model.dtype)
        self.comm.Bcast(flat, root=0)
        if self.rank == 0:
            return
        pieces, offset = [], 0
        for a in arrays:
            pieces.append(flat[offset:offset + a.size].reshape(a.shape).astype(a.dtype))
            offset += a.size
        model.set_weights(pieces[:len(weights)])
        model.set_buffers(pieces[len(weights):len(weights) + len(buffers)])
        for (key, name), a in zip(slots, pieces[len(weights) + len(buffers):]):
            optimizer.state[key][name] = model.backend.asarray(a, dtype=model.dtype)

    # ---------------------------------------------------------------- the per-step allreduce

    def step(self, step_fn, model, xp, xb, yb, n_global: int, *args):
        """Run the training step ``step_fn(model, xp, xb, yb, *args)`` on this rank's share
        (xb, yb) of a global batch of ``n_global`` samples, then :meth:`reduce_step`. An empty
        share (the last batch of an epoch smaller than K) skips the forward and adds zeros."""
        n_local = int(xb.shape[0])
        values = step_fn(model, xp, xb, yb, *args) if n_local else None
        for layer in [] if n_local else [one for _, one in model.walk() if isinstance(one, RandomLayer)]:
            layer.counter += 1  # as the skipped training forward would have advanced each Dropout's
        return self.reduce_step(model, values, n_local, n_global)

    def reduce_step(self, model, values, n_local: int, n_global: int):
        """Turn one rank's step into the whole batch's: ONE allreduce of
        ``[grad * n_local ..., buffer * n_local ..., loss * n_local, correct]`` over the ranks,
        divided by ``n_global``.

        ``values`` is the step's ``(guard, loss, correct)`` array: this rank's mean loss over its
        ``n_local`` samples (the gradients in ``layer.grads`` are of that mean) and its count of
        right predictions; None for an empty share. Afterwards every ``layer.grads`` holds the
        mean over the global batch -- sum_r(n_r * mean_r) / n, which is the whole batch's mean,
        so the update equals single-process training on that batch up to rounding -- and the
        returned ``(guard, loss, correct)`` are the global ones, identical on every rank, so
        every rank takes the same decision on a non-finite step.

        Buffers (BatchNorm running statistics) are averaged the same way, which keeps the ranks
        identical: the running mean then equals the single-process one; the running variance
        and the normalisation itself use per-rank batch statistics (docs/distributed.md)."""
        grads = model.named_parameters()
        buffers = model.named_buffers()
        shapes = [tuple(layer.params[name].shape) for _, layer, name in grads]
        shapes += [tuple(layer.buffers[name].shape) for _, layer, name in buffers]
        sizes = [math.prod(s) for s in shapes]
        if n_local:
            xp = namespace_of(values)
            scale = float(n_local)
            parts = [xp.reshape(layer.grads[name], (-1,)) for _, layer, name in grads]
            parts += [xp.reshape(layer.buffers[name], (-1,)) for _, layer, name in buffers]
            parts.append(values[1:2])
            flat = xp.concat([xp.concat(parts) * scale, values[2:3]])
        else:
            flat = model.backend.asarray(np.zeros(sum(sizes) + 2), dtype=model.dtype)
            xp = namespace_of(flat)
        summed = self.allreduce_sum(flat, model.backend)
        total, correct = summed[:-1] / float(n_global), summed[-1]
        offset = 0
        for (_, layer, name), shape, count in zip(grads, shapes, sizes):
            layer.grads[name] = xp.reshape(total[offset:offset + count], shape)
            offset += count
        # The gradients are one flat array already: the optimizer's flat update (its GPU form,
        # xpcnn.optim) takes it as it is, with no concatenation.
        model.flat_grads = ([layer.grads[name] for _, layer, name in grads], total[:offset])
        guard = xp.sum(total[:offset])
        for (_, layer, name), shape, count in zip(buffers, shapes[len(grads):], sizes[len(grads):]):
            layer.buffers[name] = xp.reshape(total[offset:offset + count], shape)
            offset += count
        loss = total[offset]
        guard = guard + loss
        return xp.stack([guard, loss, correct])

    def allreduce_sum(self, flat, backend):
        """Element-wise sum over the ranks of the 1-D array ``flat`` (of ``backend``), returned on
        ``backend``. NumPy and other host arrays: in place through MPI. CuPy / torch CUDA arrays:
        NCCL or CUDA-aware MPI when present (see :meth:`transport_for`), else through host memory."""
        transport = self.transport_for(backend)
        if transport == "nccl":
            return self._allreduce_nccl(flat, backend)
        if transport == "cuda-mpi":
            backend.synchronize()  # MPI reads device memory outside the library's stream
            self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
            return flat
        host = np.ascontiguousarray(to_numpy(flat))
        if not host.flags.writeable:
            host = host.copy()
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        return to_device(host, backend)

    def sum_floats(self, values: Sequence[float]) -> list[float]:
        """Sums over the ranks of a few Python floats (float64 on the host): metrics."""
        buffer = np.array(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        return buffer.tolist()

    # ---------------------------------------------------------------- GPU transports

    def transport_for(self, backend) -> str:
        """How gradients of ``backend`` arrays are summed: ``"host"`` (through NumPy buffers,
        always for CPU backends), ``"nccl"`` (``cupy.cuda.nccl``, CuPy arrays) or ``"cuda-mpi"``
        (device buffers handed to a CUDA-aware MPI). ``XPCNN_ALLREDUCE`` = auto (default) |
        host | nccl | cuda-mpi forces one; auto picks NCCL, then CUDA-aware MPI, then host."""
        choice = os.environ.get("XPCNN_ALLREDUCE", "auto").strip().lower() or "auto"
        if choice not in TRANSPORTS:
            raise BackendUnavailableError(f"XPCNN_ALLREDUCE: expected one of {', '.join(TRANSPORTS)}, got {choice!r}")
        if not backend.on_cuda or choice == "host":
            return "host"
        nccl_ok = backend.supports_nccl and _nccl_available()
        mpi_ok = _mpi_is_cuda_aware(self.MPI)
        if choice == "nccl" and not nccl_ok:
            raise BackendUnavailableError("XPCNN_ALLREDUCE=nccl: needs CuPy arrays and cupy.cuda.nccl "
                                          "(pip install nvidia-nccl-cu12)")
        if choice == "cuda-mpi" and not mpi_ok:
            raise BackendUnavailableError("XPCNN_ALLREDUCE=cuda-mpi: this MPI library does not report CUDA support "
                                          "(MPIX_Query_cuda_support)")
        if choice == "auto":
            return "nccl" if nccl_ok else "cuda-mpi" if mpi_ok else "host"
        return choice

    def _allreduce_nccl(self, flat, backend):
        import cupy
        from cupy.cuda import nccl

        with cupy.cuda.Device(backend.device.id):
            key = backend.device.id
            if key not in self._nccl:
                # The unique id travels as 128 signed bytes through MPI (no pickling).
                uid = np.array(nccl.get_unique_id() if self.rank == 0 else [0] * _NCCL_ID_BYTES, dtype=np.int8)
                self.comm.Bcast(uid, root=0)
                self._nccl[key] = nccl.NcclCommunicator(self.size, tuple(int(v) for v in uid), self.rank)
            kind = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}[str(flat.dtype)]
            stream = cupy.cuda.get_current_stream()
            self._nccl[key].allReduce(flat.data.ptr, flat.data.ptr, flat.size, kind, nccl.NCCL_SUM, stream.ptr)
        return flat

    # ---------------------------------------------------------------- faults

    def abort(self, exc: BaseException) -> None:
        """Print ``exc``'s traceback, labelled with this rank, to stderr and abort every rank."""
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        sys.stderr.write(f"xpcnn: rank {self.rank} of {self.size} failed; aborting every rank.\n"
                         + "".join(f"[rank {self.rank}] {line}\n" for line in text.rstrip().splitlines()))
        sys.stderr.flush()
        sys.stdout.flush()
        self.comm.Abort(1)


def _nccl_available() -> bool:
    try:
        from cupy.cuda import nccl
    except ImportError:
        return False
    return bool(getattr(nccl, "available", True))


@functools.cache
def _mpi_is_cuda_aware(mpi_module) -> bool:
    """The MPI library's own answer (Open MPI and MPICH export MPIX_Query_cuda_support; dlsym on
    the mpi4py extension also searches the libmpi it links)."""
    try:
        query = ctypes.CDLL(mpi_module.__file__).MPIX_Query_cuda_support
    except (OSError, AttributeError):
        return False
    query.restype = ctypes.c_int
    return query() == 1


# Raised at the same point on every rank: they propagate; anything else aborts the job.
COLLECTIVE_ERRORS = (RanksDisagreeError, NonFiniteError)


@contextlib.contextmanager
def abort_on_error(comm: Communicator | None) -> Iterator[None]:
    """Inside: an exception raised on this rank alone (anything but :data:`COLLECTIVE_ERRORS`)
    prints this rank's traceback and aborts every rank instead of leaving the others waiting in
    a collective forever. A no-op without a communicator."""
    if comm is None:
        yield
        return
    try:
        yield
    except COLLECTIVE_ERRORS:
        raise
    except BaseException as exc:  # noqa: BLE001 -- KeyboardInterrupt too: the job must not hang
        comm.abort(exc)
        raise


def abort_on_local_error(fn):
    """Decorator for ``fit`` / ``evaluate``: a call with ``distributed=True`` on one of several
    MPI ranks runs under :func:`abort_on_error`, and the ranks return together (a barrier), so
    that what rank 0 wrote (the last checkpoint) is there for every rank afterwards; any other
    call runs as it is."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        comm = communicator(kwargs.get("distributed", False))
        with abort_on_error(comm):
            result = fn(*args, **kwargs)
        if comm is not None:
            comm.comm.Barrier()
        return result

    return wrapper


def start_fit(comm: Communicator, model, optimizer, y, rng, **arguments) -> None:
    """Before the first step of a distributed ``fit``: check that every rank has the same data
    (sample count, labels, sample shape) and ``arguments`` (batch_size, epochs, ... and the
    shuffle generator's state, so every rank cuts the same global batches), then give every
    rank rank 0's parameters, buffers and optimizer state."""
    labels = np.ascontiguousarray(to_numpy(y))
    comm.agree("fit(distributed=True)", {
        "N (samples in x and y)": int(labels.shape[0]),
        "labels y (checksum)": labels,
        "model (architecture, input shape, dtype)": model.get_config(),
        **arguments,
        "shuffle generator state": rng.bit_generator.state,
        "gradient allreduce transport": comm.transport_for(model.backend),
    })
    comm.broadcast_state(model, optimizer)


def start_evaluate(comm: Communicator, model, y, batch_size: int) -> None:
    """Before a distributed ``evaluate``: every rank has the same labels and model."""
    labels = np.ascontiguousarray(to_numpy(y))
    comm.agree("evaluate(distributed=True)", {
        "N (samples in x and y)": int(labels.shape[0]),
        "labels y (checksum)": labels,
        "model (architecture, input shape, dtype)": model.get_config(),
        "batch_size": batch_size,
        "weights (checksum)": [np.ascontiguousarray(to_numpy(w)) for w in model.get_weights() + model.get_buffers()],
    })


training.DISTRIBUTED["mpi"] = sys.modules[__name__]  # what fit / evaluate call with distributed=True
