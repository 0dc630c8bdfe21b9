"""Beyond one process: data-parallel training over MPI and inference over Dask.

* :mod:`xpcnn.distributed.mpi` -- what ``fit(..., distributed=True)`` / ``evaluate(...,
  distributed=True)`` use under ``mpiexec -n K``: one gradient allreduce per step, initial
  state from rank 0, agreement checks, abort on a one-rank fault (needs ``.[mpi]``).
* :mod:`xpcnn.distributed.dask` (also ``xpcnn.dask``) -- ``predict`` / ``evaluate`` on dask
  arrays larger than memory, on any Dask scheduler (needs ``.[dask]``).

Neither mpi4py nor Dask is imported until used. See docs/distributed.md.
"""
