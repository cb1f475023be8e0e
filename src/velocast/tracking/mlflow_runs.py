"""MLflow plumbing: configuration, dataset inputs, figures and model logging.

Default tracking store: a SQLite file in the velocast home, artifacts in ``home/mlartifacts``;
``MLFLOW_TRACKING_URI`` points everything at a server instead.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from velocast.config import Settings, get_settings
from velocast.tracking.skops_io import import_skops, quiet_scan

log = logging.getLogger(__name__)

# Types velocast models are made of; anything else found in a model refuses to be logged.
_TRUSTED_PREFIXES = ("velocast.", "sklearn.", "lightgbm.", "numpy.", "collections.OrderedDict",
                     "builtins.", "scipy.")


# MLflow's HTTP client reads these at every call; velocast sets them (unless the user did) so an
# unreachable tracking server fails a call within VELOCAST_DEPENDENCY_TIMEOUT_SECONDS (x2: one retry)
# instead of MLflow's defaults (120 s per attempt, 7 retries with exponential backoff: minutes).
_OWN_ENV: dict[str, str] = {}


def client_timeouts(settings: Settings) -> dict[str, str]:
    """Bound MLflow's HTTP calls by the dependency timeout; the user's own MLFLOW_HTTP_* values win."""
    wanted = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(settings.dependency_timeout_seconds))),
              "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}
    for name, value in wanted.items():
        current = os.environ.get(name)
        if current is None or current == _OWN_ENV.get(name):  # unset, or set by us earlier
            os.environ[name] = _OWN_ENV[name] = value
    return {name: os.environ[name] for name in wanted}


def configure(settings: Settings | None = None) -> str:
    """Point MLflow at the configured tracking store and make sure the experiment exists."""
    settings = settings or get_settings()
    client_timeouts(settings)
    settings.home.mkdir(parents=True, exist_ok=True)
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; velocast reads that variable as the
    # user's choice, so put the environment back as the user left it (no leak into later Settings).
    user_value = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(settings.tracking_uri)
    if user_value is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = user_value
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        artifact_location = None if settings.mlflow_tracking_uri else settings.artifact_location
        try:
            client.create_experiment(settings.experiment_name, artifact_location=artifact_location)
        except mlflow.exceptions.MlflowException as exc:  # created meanwhile by another process
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    mlflow.set_experiment(settings.experiment_name)
    return settings.tracking_uri


# What loading and predicting a logged velocast model imports, besides MLflow itself (which MLflow adds)
# and velocast's own code (logged with the model: ``code_paths``). ``tests/tracking`` checks it covers
# the import closure of the model's classes.
MODEL_REQUIREMENTS = ("scikit-learn", "lightgbm", "pandas", "numpy", "scipy", "skops", "holidays", "pyyaml",
                      "pydantic", "pydantic-settings", "duckdb", "filelock")


def pip_requirements(with_torch: bool = False) -> list[str]:
    """Requirements of a logged model, pinned to the installed versions (inferring them costs seconds).

    Every name is served by PyPI: velocast itself is not a requirement but code logged with the
    model (``code_paths``). ``with_torch``: the model holds a PyTorch network (``nn``).
    """
    from packaging.version import Version

    out = []
    for name in (*MODEL_REQUIREMENTS, *(("torch",) if with_torch else ())):
        try:
            version = Version(metadata.version(name)).public  # no local label (``+cpu``): PyPI's release
        except metadata.PackageNotFoundError:
            continue
        out.append(f"{name}=={version}")
    return out


def code_paths() -> list[str]:
    """velocast's package directory, logged with every model: a model loads where velocast is not installed."""
    import velocast

    return [str(Path(velocast.__file__).parent)]


def load_sklearn_model(uri: str) -> Any:
    """The fitted pipeline at ``uri``, loaded with this process's velocast.

    MLflow puts a model's logged code first on ``sys.path`` when it loads it; in a process that runs
    velocast already, a module imported later must come from the installed velocast, never from an
    older model's copy, so ``sys.path`` is put back as it was.
    """
    import sys

    import mlflow.sklearn

    import_skops()  # before MLflow imports it: skops' own import would import torch
    path = list(sys.path)
    try:
        with quiet_scan():
            return mlflow.sklearn.load_model(uri)
    finally:
        sys.path[:] = path


def trusted_types(model: Any) -> list[str]:
    """The skops types of ``model``; raise if any is outside what velocast builds."""
    import_skops()
    import skops.io as sio

    with quiet_scan():
        types = sio.get_untrusted_types(data=sio.dumps(model))
    foreign = [t for t in types if not t.startswith(_TRUSTED_PREFIXES)]
    if foreign:
        raise TypeError(f"model holds types velocast does not trust for loading: {foreign}")
    return types


def input_example(frame: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """A few rows of model input, timestamps as ISO strings with offsets (JSON-friendly)."""
    example = frame.head(rows).copy()
    for column in example.columns:
        if isinstance(example[column].dtype, pd.DatetimeTZDtype):
            example[column] = example[column].map(lambda t: t.isoformat())
        elif pd.api.types.is_datetime64_any_dtype(example[column]):
            example[column] = example[column].dt.strftime("%Y-%m-%d")
    return example


def model_signature(classification: bool = False) -> Any:
    """Inputs a velocast model accepts: counter and timestamp required, the rest optional."""
    from mlflow.types import ColSpec, Schema

    from velocast.data.weather import WEATHER_COLUMNS
    from velocast.features import HISTORY_COLUMNS

    inputs = [ColSpec("string", "counter_id"), ColSpec("string", "timestamp")]
    inputs += [ColSpec("string", c, required=False) for c in ("counter_name", "site_id", "site_name")]
    inputs += [ColSpec("double", c, required=False)
               for c in ("latitude", "longitude", *WEATHER_COLUMNS, *HISTORY_COLUMNS)]
    outputs = Schema([ColSpec("long" if classification else "double")])
    return mlflow.models.ModelSignature(inputs=Schema(inputs), outputs=outputs)


def log_model(pipeline: Any, example: pd.DataFrame, classification: bool = False) -> Any:
    """Log a fitted pipeline (skops, explicit signature, input example, velocast's code, pinned
    requirements); return MLflow's ModelInfo."""
    import mlflow.sklearn

    from velocast.features import MODEL_INPUT_COLUMNS

    keep = [c for c in MODEL_INPUT_COLUMNS if c in example]
    trusted = trusted_types(pipeline)
    with warnings.catch_warnings(), quiet_scan():  # MLflow hints about integer columns of the example;
        warnings.simplefilter("ignore", UserWarning)  # the signature is explicit
        return mlflow.sklearn.log_model(
            pipeline, name="model", signature=model_signature(classification), input_example=example[keep],
            pip_requirements=pip_requirements(with_torch=any(t.startswith("velocast.models.nn.") for t in trusted)),
            code_paths=code_paths(), serialization_format="skops", skops_trusted_types=trusted)


def log_dataset(frame: pd.DataFrame, name: str, content_hash: str, source: str, context: str) -> None:
    """Record a dataset used by the run: name, rows, period and content hash."""
    period = ("" if frame.empty else
              f"{frame['timestamp'].min().isoformat()} .. {frame['timestamp'].max().isoformat()}")
    profile = pd.DataFrame({"rows": [len(frame)], "counters": [frame["counter_id"].nunique() if len(frame) else 0],
                            "period": [period], "content_hash": [content_hash]})
    from mlflow.data.code_dataset_source import CodeDatasetSource

    dataset = mlflow.data.from_pandas(profile, source=CodeDatasetSource(tags={"velocast_source": source}), name=name,
                                      digest=content_hash[:16])
    mlflow.log_input(dataset, context=context, tags={"rows": str(len(frame)), "period": period,
                                                     "content_hash": content_hash})


def log_days(frame: pd.DataFrame, held_out: set[str], artifact_file: str,
             trained_before: dict[str, int] | None = None, continued_from: str | None = None) -> None:
    """Which Paris days the run trained on (rows per day) and which it is judged on (held out).

    A model continued from another one (``continued_from``, its run) also carries the trees fitted on
    that one's days (``trained_before``): they count as days this run trained on."""
    days = frame["timestamp"].dt.tz_convert("Europe/Paris").dt.date.astype(str).value_counts()
    train_days = dict(trained_before or {})
    for day, rows in days.items():
        train_days[str(day)] = train_days.get(str(day), 0) + int(rows)
    record: dict[str, Any] = {"train_days": dict(sorted(train_days.items())), "held_out_days": sorted(held_out)}
    if continued_from:
        record["continued_from"] = continued_from
    mlflow.log_dict(record, artifact_file)


def log_figure(figure: Any, artifact_file: str) -> None:
    mlflow.log_figure(figure, artifact_file)


def log_file(path: Path, artifact_dir: str) -> None:
    """A file already written (a saved figure): logged as is, not drawn again."""
    mlflow.log_artifact(str(path), artifact_path=artifact_dir)


def log_frame(frame: pd.DataFrame, artifact_file: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        frame.to_csv(path)
        mlflow.log_artifact(str(path), artifact_path=str(Path(artifact_file).parent) if "/" in artifact_file else None)


def log_metrics(prefix: str, metrics: dict[str, Any]) -> None:
    mlflow.log_metrics({f"{prefix}_{k}": float(v) for k, v in metrics.items()
                        if v is not None and k != "n" and isinstance(v, (int, float))})


def artifact_location(model_info: Any) -> str:
    """The physical location of a logged model, loadable without the tracking server."""
    return mlflow.get_logged_model(model_info.model_id).artifact_location


def silence_mlflow_logs() -> None:
    """MLflow prints migration and registration chatter at INFO; keep velocast's output readable."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
