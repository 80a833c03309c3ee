"""The secrets sweep, extended to MLflow (issue 19, "Done means" 2): no secret value reaches a param, a tag, a run
name or a registered version's tags, nor any byte of the tracking database or the artifacts, on the real code path
that logs them (`training.train.train_candidate` -> `training.tracking.training_run`), with every secret the
settings know set to a recognisable value.

What the settings put into MLflow: the config hash (computed without the secrets), the seed, the candidates'
hyperparameters, the lineage; and the error of a failed run as a tag, which is where a secret used to leak: an
exception that quotes a key, a token, or a URL with its password went into the `error` tag verbatim.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from cta.config import Settings, load_settings
from cta.errors import ExchangeError
from cta.registry import configure_mlflow, registered_model_name
from tests.conftest import CONFIG_DIR
from tests.factories import training_data

API_KEY = "KEY-mlflow-sweep-exchange-key-3b91"
API_SECRET = "SEC-mlflow-sweep-exchange-secret-77c0"
TOKEN = "TKN-mlflow-sweep-api-token-e52d"
DB_PASSWORD = "PWD-mlflow-sweep-db-password-0a4f"
SIGNING_KEY = "PRIVATE+KEY+cta-log+mlflow-sweep-signing-key-9d13"
WITNESS_KEY = "PRIVATE+KEY+witness+mlflow-sweep-witness-key-4e27"
URL_PASSWORD = "hunter2-in-a-url-5c8e"  # a password given inside a URL (not one of the Secrets)
SECRETS = [API_KEY, API_SECRET, TOKEN, DB_PASSWORD, SIGNING_KEY, WITNESS_KEY, URL_PASSWORD]
ENV = {
    "CTA_API_KEY": API_KEY,
    "CTA_API_SECRET": API_SECRET,
    "CTA_API_TOKEN": TOKEN,
    "CTA_DB_PASSWORD": DB_PASSWORD,
    "CTA_LEDGER_SIGNING_KEY": SIGNING_KEY,
    "CTA_LEDGER_WITNESS_KEY": WITNESS_KEY,
}


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    previous = mlflow.get_tracking_uri()
    settings = load_settings(
        env=ENV,
        config_dir=CONFIG_DIR,
        overrides={
            "paths": {"data_dir": str(tmp_path / "data"), "logs_dir": str(tmp_path / "logs")},
            "training": {
                "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "artifact_root": str(tmp_path / "artifacts"),
                "min_train_rows": 300,
                "folds": 2,
            },
        },
    )
    assert sorted(settings.secrets.values()) == sorted(ENV.values())  # every secret is set
    configure_mlflow(settings)
    yield settings
    mlflow.set_tracking_uri(previous)


def leaky_error() -> ExchangeError:
    """What a failing dependency may say: a URL with its password, a signed query, a header, the raw values."""
    return ExchangeError(
        f"GET https://user:{URL_PASSWORD}@venue.example/api?apiKey={API_KEY}&signature=abc failed; "
        f"Authorization: Bearer {TOKEN}; secret {API_SECRET}; db postgresql://cta:{DB_PASSWORD}@db/cta; "
        f"keys {SIGNING_KEY} {WITNESS_KEY}"
    )


def everything_mlflow_holds(settings: Settings, tmp_path: Path) -> list[tuple[str, str]]:
    """(where, text) for every param, tag and run name of every run, every registered version's tags, and the
    raw bytes of the tracking database and every artifact file."""
    client = MlflowClient()
    found: list[tuple[str, str]] = []
    for run in mlflow.search_runs(search_all_experiments=True, output_format="list"):
        where = f"run {run.info.run_id}"
        found += [(f"{where} param {k}", f"{k}={v}") for k, v in run.data.params.items()]
        found += [(f"{where} tag {k}", f"{k}={v}") for k, v in run.data.tags.items()]
        found.append((f"{where} name", run.info.run_name or ""))
    for model in client.search_registered_models():
        for version in client.search_model_versions(f"name='{model.name}'"):
            found += [(f"{model.name} v{version.version} tag {k}", f"{k}={v}") for k, v in version.tags.items()]
    for path in [tmp_path / "mlflow.db", *(tmp_path / "artifacts").rglob("*")]:
        if path.is_file():
            found.append((str(path), path.read_bytes().decode("latin-1")))
    return found


def test_no_secret_reaches_mlflow_from_a_training_run(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real run that succeeds (logistic: params, tags, the registered version) and one that fails with an error
    quoting every secret. Before: the failed run's `error` tag held them all in clear."""
    import training.train as train_module
    from training.train import train_candidate

    data = training_data(rows=1200, folds=2)
    outcome = train_candidate("logistic", data, settings, registry_version="sweep")
    assert outcome.version == "1"

    def leaking_fit(*_: Any) -> Any:
        raise leaky_error()

    real_family = train_module.family
    monkeypatch.setattr(train_module, "family", lambda name: leaking_fit if name == "gbm" else real_family(name))
    with pytest.raises(ExchangeError):
        train_candidate("gbm", data, settings, registry_version="sweep")

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert {r.info.status for r in runs} == {"FINISHED", "FAILED"}
    (failed,) = [r for r in runs if r.info.status == "FAILED"]
    error = failed.data.tags["error"]
    assert error.startswith("ExchangeError: GET https://user:***@venue.example/api?apiKey=***"), error
    assert "config_hash" in runs[0].data.tags and registered_model_name(data.development.market)
    for where, text in everything_mlflow_holds(settings, tmp_path):
        for secret in SECRETS:
            assert secret not in text, (where, secret)


def test_scrubbed_masks_every_kind_of_secret(settings: Settings) -> None:
    from training.tracking import scrubbed

    text = scrubbed(settings, leaky_error())
    for secret in SECRETS:
        assert secret not in text, secret
    assert "venue.example" in text and "failed" in text  # the rest of the message is kept
    assert scrubbed(settings, 0.25) == "0.25" and scrubbed(settings, "logistic") == "logistic"
