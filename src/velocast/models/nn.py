"""``nn``: a small PyTorch network — an embedding per counter plus scaled numeric features.

Trained on log1p(count), early-stopped on the latest 10% of the (time-ordered) training rows,
deterministic for a given seed. Code 0 of the embedding is "unknown counter"; a small share of
training rows is shown with that code so it learns an average counter. The fitted weights are kept
as numpy arrays, so the estimator is saved with skops like every other velocast model.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

from velocast.models.spec import ModelSpec, Param

log = logging.getLogger(__name__)

DEFAULTS = {"embedding_dim": 16, "hidden": 128, "epochs": 40, "learning_rate": 1e-3, "batch_size": 1024}
CONTINUE_DEFAULTS = {"epochs": 8, "learning_rate": 2e-4}


def _torch():
    try:
        import torch
    except ImportError as exc:  # the `nn` extra is optional
        raise ImportError("the nn model needs PyTorch: pip install 'velocast[nn]'") from exc
    return torch


def _build_module(n_counters: int, n_numeric: int, embedding_dim: int, hidden: int, dropout: float):
    torch = _torch()
    nn = torch.nn

    class CounterNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(n_counters + 1, embedding_dim)
            self.body = nn.Sequential(
                nn.Linear(embedding_dim + n_numeric, hidden), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, 1))

        def forward(self, codes, numeric):
            return self.body(torch.cat([self.embedding(codes), numeric], dim=1)).squeeze(1)

    return CounterNet()


class TorchRegressor(BaseEstimator, RegressorMixin):
    def __init__(self, embedding_dim: int = 16, hidden: int = 128, dropout: float = 0.1, epochs: int = 40,
                 learning_rate: float = 1e-3, batch_size: int = 1024, patience: int = 4,
                 validation_fraction: float = 0.1, unknown_share: float = 0.02, random_state: int = 42):
        self.embedding_dim = embedding_dim
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.unknown_share = unknown_share
        self.random_state = random_state

    # ---------------------------------------------------------------- arrays
    def _arrays(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        codes = np.asarray(X["counter_code"], dtype=np.int64) + 1  # 0 = unknown
        codes = np.where((codes < 0) | (codes > self.n_counters_), 0, codes)
        numeric = X[self.numeric_columns_].to_numpy(np.float64)
        numeric = np.where(np.isnan(numeric), self.fill_[None, :], numeric)
        return codes, ((numeric - self.mean_) / self.scale_).astype(np.float32)

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> TorchRegressor:
        self.numeric_columns_ = [c for c in X.columns if c != "counter_code"]
        self.n_counters_ = int(np.nanmax(np.asarray(X["counter_code"], float))) + 1 if len(X) else 0
        numeric = X[self.numeric_columns_].to_numpy(np.float64)
        fill = np.nanmedian(np.where(np.isfinite(numeric), numeric, np.nan), axis=0)
        self.fill_ = np.nan_to_num(fill, nan=0.0)
        filled = np.where(np.isnan(numeric), self.fill_[None, :], numeric)
        self.mean_ = filled.mean(axis=0)
        self.scale_ = np.where(filled.std(axis=0) > 0, filled.std(axis=0), 1.0)
        target = np.log1p(np.clip(np.asarray(y, float), 0, None))
        self.y_mean_, self.y_scale_ = float(target.mean()), float(target.std() or 1.0)
        _torch().manual_seed(self.random_state)
        self._module = _build_module(self.n_counters_, len(self.numeric_columns_), self.embedding_dim,
                                     self.hidden, self.dropout)
        self._train(X, target, self.epochs, self.learning_rate)
        return self

    def continue_fit(self, X: pd.DataFrame, y: np.ndarray, epochs: int, learning_rate: float) -> TorchRegressor:
        """Keep training the fitted network on new rows at a (lower) learning rate."""
        self._get_module()  # a loaded (or copied) estimator keeps its weights only: rebuild the network
        self._train(X, np.log1p(np.clip(np.asarray(y, float), 0, None)), epochs, learning_rate)
        return self

    def _train(self, X: pd.DataFrame, target: np.ndarray, epochs: int, learning_rate: float) -> None:
        torch = _torch()
        torch.manual_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)
        codes, numeric = self._arrays(X)
        codes = np.where(rng.random(len(codes)) < self.unknown_share, 0, codes)
        y = ((target - self.y_mean_) / self.y_scale_).astype(np.float32)
        n_val = max(1, int(len(y) * self.validation_fraction)) if len(y) > 20 else 0
        cut = len(y) - n_val
        tc, tn, ty = (torch.from_numpy(a[:cut]) for a in (codes, numeric, y))
        vc, vn, vy = (torch.from_numpy(a[cut:]) for a in (codes, numeric, y))
        optimiser = torch.optim.Adam(self._module.parameters(), lr=learning_rate)
        loss_fn = torch.nn.MSELoss()
        best, best_state, stale = np.inf, None, 0
        self.history_ = []
        for epoch in range(epochs):
            self._module.train()
            order = torch.from_numpy(rng.permutation(cut))
            for start in range(0, cut, self.batch_size):
                idx = order[start:start + self.batch_size]
                optimiser.zero_grad()
                loss = loss_fn(self._module(tc[idx], tn[idx]), ty[idx])
                loss.backward()
                optimiser.step()
            self._module.eval()
            with torch.no_grad():
                val = float(loss_fn(self._module(vc, vn), vy)) if n_val else float(loss)
            self.history_.append(val)
            if val < best - 1e-4:
                best, stale = val, 0
                best_state = {k: v.detach().clone() for k, v in self._module.state_dict().items()}
            else:
                stale += 1
                if stale >= self.patience:
                    log.info("nn: early stop at epoch %d (best validation loss %.4f)", epoch + 1, best)
                    break
        if best_state is not None:
            self._module.load_state_dict(best_state)
        self.weights_ = {k: v.numpy().copy() for k, v in self._module.state_dict().items()}
        self.epochs_trained_ = len(self.history_)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        torch = _torch()
        module = self._get_module()
        codes, numeric = self._arrays(X)
        with torch.no_grad():
            out = module(torch.from_numpy(codes), torch.from_numpy(numeric)).numpy().astype(float)
        return np.clip(np.expm1(out * self.y_scale_ + self.y_mean_), 0, None)

    def _get_module(self):
        module = getattr(self, "_module", None)
        if module is None:
            torch = _torch()
            module = _build_module(self.n_counters_, len(self.numeric_columns_), self.embedding_dim,
                                   self.hidden, self.dropout)
            module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in self.weights_.items()})
            self._module = module
        module.eval()
        return module

    # the torch module itself is never serialised: only its weights, as numpy arrays
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_module", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._module = None


def _search_space(trial: Any) -> dict[str, Any]:
    return {
        "embedding_dim": trial.suggest_categorical("embedding_dim", [8, 16, 32]),
        "hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
        "learning_rate": trial.suggest_float("learning_rate", 3e-4, 3e-3, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
    }


def continue_from(previous: TorchRegressor, X: pd.DataFrame, y: np.ndarray, params: dict[str, Any]) -> TorchRegressor:
    """A copy of ``previous`` trained ``epochs`` more on the new rows, from its weights, at ``learning_rate``."""
    return copy.deepcopy(previous).continue_fit(X, y, epochs=int(params["epochs"]),
                                                learning_rate=float(params["learning_rate"]))


SPEC = ModelSpec(
    name="nn", task="regression", default_horizon="calendar",
    description="PyTorch: counter embedding + scaled numeric features (extra 'nn')",
    params={"embedding_dim": Param(int, 1, 512), "hidden": Param(int, 4, 4096),
            "dropout": Param(float, 0.0, 0.9), "epochs": Param(int, 1, 1000),
            "learning_rate": Param(float, 1e-6, 1.0), "batch_size": Param(int, 8, 1 << 20),
            "patience": Param(int, 1, 100)},
    defaults=DEFAULTS,
    make_estimator=lambda p, seed: TorchRegressor(**p, random_state=seed),
    fine_tune_continue="more epochs from the champion's weights at a lower learning rate", continue_from=continue_from,
    continue_defaults=CONTINUE_DEFAULTS, search_space=_search_space,
)
