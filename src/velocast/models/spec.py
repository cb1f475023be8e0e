"""What a model family declares about itself: a ``ModelSpec`` (each ``velocast.models.<family>``
module exports its own as ``SPEC``) and the ``Param`` checks of its hyper-parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Param:
    """One tunable hyper-parameter: its type, bounds or choices."""

    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    nullable: bool = False

    def check(self, name: str, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"hyperparameter {name}={value!r}: expected one of {list(self.choices)}")
            return value
        if self.kind is int and (isinstance(value, bool) or not float(value).is_integer()):
            raise ValueError(f"hyperparameter {name}={value!r}: expected an integer")
        try:
            value = self.kind(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"hyperparameter {name}={value!r}: expected {self.kind.__name__}") from exc
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(f"hyperparameter {name}={value!r}: expected between {self.low} and {self.high}")
        return value


# ``continue_from(previous, X, y, params)``: a new estimator that continues the fitted ``previous``
# (the family's bare estimator) on the feature rows ``X`` and counts ``y``; ``previous`` is untouched
ContinueFrom = Callable[[Any, Any, Any, dict[str, Any]], Any]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str  # "regression" or "classification"
    default_horizon: str
    description: str
    params: dict[str, Param]
    defaults: dict[str, Any]
    make_estimator: Callable[[dict[str, Any], int], Any]  # (hyper-parameters, seed) -> bare estimator
    fine_tune_continue: str  # how the "continue" strategy works for this family (or why it has none)
    continue_from: ContinueFrom | None = None  # None: no "continue" fine-tuning (sliding window only)
    continue_defaults: dict[str, Any] = field(default_factory=dict)
    counter_as_category: bool = False
    search_space: Callable[[Any], dict[str, Any]] | None = None  # an optuna trial -> hyper-parameters
    # tuning: most trees a trial may grow before early stopping on its fold's validation days
    # (the family's ``fit`` takes ``eval_set`` and sets ``best_iteration_``); None: no early stopping
    tuning_max_trees: int | None = None
    uses_weather: bool = True  # fitted with a no-weather sibling (``WeatherFallback``)
