"""The compiled training step on the jax backend (xpcnn.jit) beside the numpy backend, PyTorch
CPU and the same step run op by op on jax.

    OMP_NUM_THREADS=2 python benchmarks/bench_jit.py --out benchmarks/results/jit_threads2.txt
    python benchmarks/bench_jit.py --quick                 # seconds, for a smoke test

Workloads (benchmarks/harness.py, as bench_train.py): mnist5k images float32 in [0, 1], the
notebook network and the deep network, batch 64, SGD lr 0.05, every contender from the same
initial weights, each step returning its loss as a Python float (one host read per step):

    xpcnn[numpy]       model.train_step(x, y, SGD) on the numpy backend
    xpcnn[jax] jit     xpcnn.jit.make_step(model, SGD).train(x, y): forward, loss, backward and
                       update as one jax.jit function (compiled in the warm-up, not timed)
    xpcnn[jax] eager   model.train_step on the jax backend: JAX dispatches every operation alone
    jax lax+grad       the same network written directly in JAX (lax.conv_general_dilated,
                       lax.reduce_window, jax.value_and_grad, SGD) under one jax.jit: what XLA
                       itself makes of this step, the ceiling for a compiled step on this CPU
    torch[cpu]         zero_grad, forward, cross_entropy, backward, SGD step, loss.item()

Contenders alternate round-robin, the median of --repeats rounds is reported (images/s) with
the spread over rounds. Threads: NumPy's BLAS and PyTorch are limited to --threads; XLA's CPU
runtime has no thread setting and sizes its pool to the CPUs it may run on, so with --threads
below the machine's CPU count the whole process is pinned to that many CPUs
(os.sched_setaffinity) before JAX starts. The compile time of the jit step (first call, per
batch shape) is printed separately.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("XPCNN_MALLOC", "keep")  # this process is xpcnn's (README: allocator)

from benchmarks import harness

NETS = ("notebook", "deep")
BATCH = 64


def jit_workload(net, images_u8, labels, batch):
    """(Workload of the compiled step on jax, seconds its first call took: trace + XLA compile)."""
    import xpcnn
    from xpcnn import jit, optim

    model = harness.build_xpcnn(net, backend="jax")
    x = xpcnn.to_device(harness.to_float(images_u8), "jax")
    y = xpcnn.to_device(labels, "jax")
    batches = harness.cycled_batches(x, y, batch)
    step = jit.make_step(model, optim.SGD(lr=harness.LR))
    t0 = time.perf_counter()
    step.train(*next(batches))
    compile_s = time.perf_counter() - t0

    def run():
        return step.train(*next(batches))[0]

    return harness.Workload("xpcnn[jax] jit", run, batch), compile_s


def jax_reference_workload(net, images_u8, labels, batch):
    """The network written directly in JAX (XLA's own conv, pool and autodiff), from the same
    initial weights, one jax.jit SGD step returning the loss."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    import xpcnn

    weights = [jnp.asarray(xpcnn.to_numpy(w)) for w in harness.build_xpcnn(net).get_weights()]
    nchw = ("NCHW", "OIHW", "NCHW")

    def conv(h, w, padding):
        return lax.conv_general_dilated(h, w, (1, 1), ((padding, padding), (padding, padding)), dimension_numbers=nchw)

    def pool(h, op, init):
        return lax.reduce_window(h, init, op, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def logits(p, h):
        if net == "notebook":  # conv (no bias) -> avg pool -> flatten -> dense
            h = pool(conv(h, p[0], 0), lax.add, 0.0) / 4.0
            return h.reshape(h.shape[0], -1) @ p[1] + p[2]
        for w, b in ((p[0], p[1]), (p[2], p[3])):  # deep: 2 x (conv pad 1 -> relu -> max pool) -> dense
            h = pool(jax.nn.relu(conv(h, w, 1) + b[None, :, None, None]), lax.max, -jnp.inf)
        return h.reshape(h.shape[0], -1) @ p[4] + p[5]

    def loss(p, x, y):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits(p, x)), y[:, None], axis=1))

    @jax.jit
    def sgd_step(p, x, y):
        value, grads = jax.value_and_grad(loss)(p, x, y)
        return [w - harness.LR * g for w, g in zip(p, grads)], value

    batches = harness.cycled_batches(jnp.asarray(harness.to_float(images_u8)), jnp.asarray(labels), batch)
    params = [weights]

    def run():
        params[0], value = sgd_step(params[0], *next(batches))
        return float(value)

    return harness.Workload("jax lax+grad", run, batch)


def contenders(net, images, labels, args, with_torch):
    workloads = [harness.xpcnn_workload(harness.build_xpcnn(net), images, labels, BATCH, name="xpcnn[numpy]")]
    jitted, compile_s = jit_workload(net, images, labels, BATCH)
    workloads.append(jitted)
    if not args.no_eager:
        workloads.append(harness.xpcnn_workload(harness.build_xpcnn(net, backend="jax"), images, labels, BATCH,
                                                backend="jax", name="xpcnn[jax] eager"))
    workloads.append(jax_reference_workload(net, images, labels, BATCH))
    if with_torch:
        workloads.append(harness.torch_workload(harness.torch_from_xpcnn(harness.build_xpcnn(net)), images, labels,
                                                BATCH, name="torch[cpu]"))
    return workloads, compile_s


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_arguments(parser)
    parser.set_defaults(repeats=9, round_seconds=0.5)
    parser.add_argument("--quick", action="store_true", help="5 short rounds")
    parser.add_argument("--no-eager", action="store_true", help="leave out the op-by-op jax contender")
    parser.add_argument("--out", metavar="PATH", help="also write the printed report to PATH")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.round_seconds = 5, 0.05
    pinned = ""
    if args.threads < (os.cpu_count() or 1) and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[:args.threads]
        os.sched_setaffinity(0, cpus)
        pinned = (f"; process pinned to CPU(s) {', '.join(map(str, cpus))} "
                  "(XLA has no thread setting: this is what limits it)")
    import jax

    with_torch, env, _, load = harness.start_run(args)
    lines = [f"{env['date']}  {env['cpu']} ({env['cpu_count']} CPUs), threads {args.threads} (NumPy BLAS, PyTorch; "
             f"XLA: its own pool{pinned}), numpy {env['numpy']}, torch {env['torch'] or '-'}, jax {jax.__version__}, "
             f"commit {env['commit']}",
             f"{args.repeats} rounds of ~{args.round_seconds:g} s per contender, round-robin; images/s = median", ""]
    images, labels = harness.load_images()
    head = (f"{'network':<10} {'contender':<18} {'batch':>5} {'images/s':>10} {'min..max':>19} {'vs numpy':>9} "
            f"{'vs torch':>9}")
    table = [head, "-" * len(head)]
    compile_times = []
    for net in NETS:
        print(f"  measuring {net}-net b{BATCH} ...", file=sys.stderr, flush=True)
        workloads, compile_s = contenders(net, images, labels, args, with_torch)
        compile_times.append(f"{net}-net: {compile_s:.2f} s")
        results = harness.measure(workloads, repeats=args.repeats, round_s=args.round_seconds,
                                  warmup_s=min(0.5, args.round_seconds))
        numpy_ips = results["xpcnn[numpy]"].median
        torch_ips = results["torch[cpu]"].median if "torch[cpu]" in results else None
        for name, r in results.items():
            vs_torch = f"{r.median / torch_ips:.2f}x" if torch_ips else ""
            spread = f"{min(r.samples):.4g}..{max(r.samples):.4g}"
            table.append(f"{net:<10} {name:<18} {BATCH:>5} {r.median:>10.5g} {spread:>19} "
                         f"{r.median / numpy_ips:>8.2f}x {vs_torch:>9}")
    lines += table
    lines += ["", "vs numpy / vs torch: images/s ratio to xpcnn[numpy] / torch[cpu] in the same run (> 1: faster).",
              "first call of the jit step (trace + XLA compile, not timed above): " + "; ".join(compile_times)]
    if (line := load.summary(env["cpu_count"])) is not None:
        lines.append(line)
    report = "\n".join(lines)
    print(report)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
