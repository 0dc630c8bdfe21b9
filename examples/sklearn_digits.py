"""scikit-learn's 8x8 digits: 5-fold cross-validation of CNNClassifier beside MLPClassifier and SVC.

    python examples/sklearn_digits.py > examples/sklearn_digits_output.txt

The folds are scikit-learn's default for ``cross_val_score(cv=5)``: StratifiedKFold(5) without
shuffling, so every model sees the same splits. Every model gets the same input, pixel values
0..16 scaled to [0, 1] by a MinMaxScaler in its pipeline.
"""

import platform
import time

import sklearn
import threadpoolctl
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.svm import SVC

import xpcnn
from xpcnn.sklearn import CNNClassifier

X, y = load_digits(return_X_y=True)  # (1797, 64) pixel values 0..16 of 8x8 images, labels 0-9 (1797,)
cv = StratifiedKFold(n_splits=5)
models = {
    "CNNClassifier": CNNClassifier(epochs=20, learning_rate=3e-3, random_state=0),
    "MLPClassifier": MLPClassifier(max_iter=1000, random_state=0),
    "SVC": SVC(),
}

print(f"digits {X.shape}, {len(set(y))} classes; 5-fold StratifiedKFold (no shuffle); xpcnn {xpcnn.__version__}, "
      f"scikit-learn {sklearn.__version__}, {platform.machine()}, backend {xpcnn.get_backend()}")
# The networks' matrices are small: one BLAS thread each, as spare threads only spin-wait.
with threadpoolctl.threadpool_limits(1):
    for name, model in models.items():
        start = time.process_time()  # CPU time: on a shared machine, wall time says more about the neighbours
        scores = cross_val_score(make_pipeline(MinMaxScaler(), model), X, y, cv=cv)
        folds = " ".join(f"{s:.4f}" for s in scores)
        print(f"{name:<14} mean {scores.mean():.4f}  std {scores.std():.4f}  folds {folds}  "
              f"CPU {time.process_time() - start:6.1f} s")
