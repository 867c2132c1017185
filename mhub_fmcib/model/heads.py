"""Linear heads: a logistic regression on the 4096 features, applied at inference.

``mhub-fmcib-train probe`` writes the head as JSON::

    {"format": "mhub-fmcib-linear-head", "version": 1, "name": ..., "task": "binary"|"classification",
     "class_names": [...], "feature_names": ["fmcib_0000", ...], "scaler_mean": [...],
     "scaler_scale": [...], "coef": [[...]], "intercept": [...], "weights_sha256": ..., ...}

``predict`` standardises ``(x - mean) / scale`` and applies the logistic model: binary
heads give P(class_names[1]) as (N,), multi-class heads the softmax over classes (N, C),
equal to scikit-learn's ``StandardScaler`` + ``LogisticRegression.predict_proba``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError

HEAD_FORMAT = "mhub-fmcib-linear-head"


@dataclass(frozen=True, eq=False)
class LinearHead:
    """A fitted scaler + logistic regression.

    Attributes:
        name: column name of the prediction.
        task: ``binary`` or ``classification``.
        class_names: labels in the model's class order.
        feature_names: names of the input features (length F).
        mean / scale: float64 (F,) standardisation.
        coef: float64 (1, F) for binary, (C, F) for classification.
        intercept: float64 (1,) or (C,).
        weights_sha256: sha256 of the encoder weights the features came from ("" if unknown).
    """

    name: str
    task: str
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    coef: npt.NDArray[np.float64]
    intercept: npt.NDArray[np.float64]
    weights_sha256: str = ""

    def __post_init__(self) -> None:
        f = len(self.feature_names)
        n_out = 1 if self.task == "binary" else len(self.class_names)
        if self.task not in ("binary", "classification"):
            raise ConfigError(f"head {self.name!r}: task must be binary or classification, got {self.task!r}")
        if self.task == "binary" and len(self.class_names) != 2:
            raise ConfigError(f"binary head {self.name!r} needs 2 class names, got {self.class_names}")
        for what, arr, shape in (
            ("scaler_mean", self.mean, (f,)), ("scaler_scale", self.scale, (f,)),
            ("coef", self.coef, (n_out, f)), ("intercept", self.intercept, (n_out,)),
        ):  # fmt: skip
            if np.shape(arr) != shape:
                raise ConfigError(f"head {self.name!r}: {what} has shape {np.shape(arr)}, expected {shape}")
        if not np.all(np.asarray(self.scale) > 0):
            raise ConfigError(f"head {self.name!r}: scaler_scale must be positive")

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        """Read a head file written by ``mhub-fmcib-train probe``."""
        path = Path(path)
        try:
            d: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"head file {path} does not exist") from e
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"head file {path} is not JSON ({e}); pass a file written by mhub-fmcib-train probe"
            ) from e
        if d.get("format") != HEAD_FORMAT:
            raise ConfigError(
                f"{path} is not a linear head file (format {d.get('format')!r}, expected {HEAD_FORMAT!r})"
            )
        try:
            return cls(
                name=str(d["name"]),
                task=str(d["task"]),
                class_names=tuple(str(c) for c in d["class_names"]),
                feature_names=tuple(str(c) for c in d["feature_names"]),
                mean=np.asarray(d["scaler_mean"], np.float64),
                scale=np.asarray(d["scaler_scale"], np.float64),
                coef=np.asarray(d["coef"], np.float64),
                intercept=np.asarray(d["intercept"], np.float64),
                weights_sha256=str(d.get("weights_sha256", "")),
            )
        except KeyError as e:
            raise ConfigError(f"head file {path} lacks the entry {e}") from e

    def to_dict(self) -> dict[str, Any]:
        """The JSON content (see module docstring)."""
        return {
            "format": HEAD_FORMAT, "version": 1, "name": self.name, "task": self.task,
            "class_names": list(self.class_names), "feature_names": list(self.feature_names),
            "scaler_mean": self.mean.tolist(), "scaler_scale": self.scale.tolist(),
            "coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
            "weights_sha256": self.weights_sha256,
        }  # fmt: skip

    def predict(self, features: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Probabilities: (N,) of ``class_names[1]`` for binary heads, (N, C) otherwise.

        Args:
            features: (N, F) (or (F,)) float features in ``feature_names`` order.
        """
        x = np.asarray(features, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ConfigError(f"head {self.name!r} expects (N, {len(self.feature_names)}) features, got {x.shape}")
        z = ((x - self.mean) / self.scale) @ self.coef.T + self.intercept
        if self.task == "binary":
            out: npt.NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * z[:, 0]))  # stable sigmoid
            return out
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        probs: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
        return probs


def predictions(heads: Sequence[LinearHead], features: npt.NDArray[np.float32]) -> list[tuple[tuple[str, float], ...]]:
    """Each head's output per row of ``features`` (N, 4096): binary heads give one value
    named after the head, multi-class heads one value per class (``<head>__<class>``)."""
    per_row: list[list[tuple[str, float]]] = [[] for _ in range(len(features))]
    for head in heads:
        p = head.predict(features)
        for i in range(len(features)):
            if p.ndim == 1:
                per_row[i].append((head.name, float(p[i])))
            else:
                per_row[i] += [(f"{head.name}__{c}", float(v)) for c, v in zip(head.class_names, p[i], strict=True)]
    return [tuple(r) for r in per_row]
