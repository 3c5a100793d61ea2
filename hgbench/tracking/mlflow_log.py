"""A run in an MLflow tracking server (or MLflow's local folder): the same figures, the settings as params, the record.

One MLflow run per hgbench run, in experiment ``hgbench`` unless told otherwise, found again by its tags
(``hgbench.run_id``, ``hgbench.machine``, ``hgbench.started``: the record's run id, machine and start), so a resumed
run, a second `hgbench export mlflow` or the export of a run that logged live all continue the same MLflow run and
add only what it lacks: the epochs whose figures it does not hold (by the steps of ``loss/train``), the params it
does not have, the final figures once. Tagged with the case, as-built, machine and git commit; the record JSON and
each epoch's pictures (``pictures/val_0/epoch_0001.jpg``, ...) are its artifacts.

MLflow's HTTP client retries a refused request for minutes by default; unless the user set them, this process asks
for two retries and a 10 s timeout (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``), so a server
that is down costs a run seconds, once: `hgbench.tracking.fanout` stops calling a tracker after its first failure.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from hgbench.files.atomic_io import write_json_atomic
from hgbench.tracking.figures import (
    FINAL_SENTINEL,
    SENTINEL,
    epoch_figures,
    epochs_of,
    final_figures,
    final_step,
    hparams,
    machine_of,
)
from hgbench.tracking.pictures import Picture

DEFAULT_EXPERIMENT = "hgbench"
CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
# The MLflow run status for each way an hgbench run ends.
END_STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
PARAMS_PER_CALL = 100  # MLflow's log_batch limit


def available() -> str | None:
    """None when the MLflow client can be imported, else what to install."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return "the mlflow package is not installed: pip install 'hgbench[mlflow]'"
    return None


def shown_uri(uri: str | None) -> str:
    """A tracking URI as a record or a line may show it: without a password or token in it."""
    if not uri:
        return "MLflow's default (MLFLOW_TRACKING_URI, else ./mlruns)"
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts._replace(query="")) if parts.scheme else uri


def _tag_filter(tags: Mapping[str, str]) -> str:
    return " and ".join(f"tags.`{k}` = '{v.replace(chr(39), '')}'" for k, v in tags.items())


class MlflowTracker:
    """Logs one run to MLflow at `uri` (None: MLflow's default: ``MLFLOW_TRACKING_URI``, else ``./mlruns``)."""

    name = "mlflow"

    def __init__(self, uri: str | None, experiment: str = DEFAULT_EXPERIMENT) -> None:
        for key, value in CLIENT_DEFAULTS.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # hgbench says where the run is
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id: str | None = None
        self._steps: set[int] = set()
        self._final = False
        self.added: list[str] = []  # what this tracker sent that the MLflow run lacked (export says it)

    def describe(self) -> dict:
        return {"uri": shown_uri(self.uri), "experiment": self.experiment, "mlflow_run_id": self.run_id}

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment)
        except Exception:  # noqa: BLE001 - another run of a sweep created it a moment ago
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    @staticmethod
    def identity_tags(record: Mapping[str, Any]) -> dict[str, str]:
        """The tags that find the run again."""
        return {
            "hgbench.run_id": str(record.get("run_id")),
            "hgbench.machine": machine_of(record),
            "hgbench.started": str(record.get("started")),
        }

    @staticmethod
    def tags(record: Mapping[str, Any]) -> dict[str, str]:
        spec = record.get("spec") or {}
        commit = (record.get("commit_info") or {}).get("id")
        tags = {
            **MlflowTracker.identity_tags(record),
            "hgbench.case": str(spec.get("name")),
            "hgbench.as_built": str(bool(spec.get("as_built"))).lower(),
            "hgbench.git_commit": str(commit),
            "hgbench.status": str(record.get("status")),
            "mlflow.runName": str(record.get("run_id")),
        }
        if commit:
            tags["mlflow.source.git.commit"] = str(commit)
        return tags

    def open(self, record: Mapping[str, Any]) -> None:
        """Find or create the run; send the params it lacks and the record's epochs it does not hold."""
        from mlflow.entities import Param, RunTag

        experiment_id = self._experiment_id()
        ident = self.identity_tags(record)
        found = self.client.search_runs([experiment_id], filter_string=_tag_filter(ident), max_results=1)
        if found:
            run = found[0]
            self.run_id = run.info.run_id
            if run.info.status != "RUNNING" and record.get("status") != "finished":
                self.client.update_run(self.run_id, status="RUNNING")  # a resumed run is running again
            have = dict(run.data.params)
            self._steps = {m.step for m in self.client.get_metric_history(self.run_id, SENTINEL)}
            self._final = FINAL_SENTINEL in run.data.metrics
        else:
            run = self.client.create_run(experiment_id, tags=self.tags(record), run_name=str(record.get("run_id")))
            self.run_id, have, self._steps, self._final = run.info.run_id, {}, set(), False
            self.added.append("a new MLflow run")
        params = [Param(k, str(v)[:6000]) for k, v in hparams(record).items() if k not in have]
        for i in range(0, len(params), PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[i : i + PARAMS_PER_CALL])
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in self.tags(record).items()])
        if params:
            self.added.append(f"{len(params)} params")
        missing = [e for e in epochs_of(record) if e["epoch"] not in self._steps]
        for entry in missing:
            self._metrics(epoch_figures(entry), entry["epoch"])
        if missing:
            self.added.append(f"epochs {', '.join(str(e['epoch']) for e in missing)}")

    def _metrics(self, figures: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in figures.items()])
        self._steps.add(step)

    def log_epoch(self, entry: Mapping[str, Any], pictures: list[Picture]) -> None:
        self._metrics(epoch_figures(entry), entry["epoch"])
        if pictures:
            with tempfile.TemporaryDirectory(prefix="hgbench-mlflow-") as tmp:
                for picture in pictures:  # pictures/val_0/epoch_0003.jpg: one person's epochs side by side
                    path = Path(tmp) / f"epoch_{entry['epoch']:04d}.jpg"
                    path.write_bytes(picture.jpeg)
                    self.client.log_artifact(self.run_id, str(path), artifact_path=f"pictures/{picture.name}")

    def log_final(self, record: Mapping[str, Any]) -> None:
        """The final figures (once), the status tag and the record itself as an artifact."""
        from mlflow.entities import RunTag

        figures = final_figures(record)
        if figures and not self._final:
            self._metrics(figures, final_step(record))
            self._final = True
            self.added.append("final figures")
        self.client.log_batch(self.run_id, tags=[RunTag("hgbench.status", str(record.get("status")))])
        self.log_record(record)

    def log_record(self, record: Mapping[str, Any]) -> None:
        """The record JSON as the artifact ``record/<run id>.json`` (replaced on every call: the newest wins)."""
        with tempfile.TemporaryDirectory(prefix="hgbench-mlflow-") as tmp:
            path = Path(tmp) / f"{record.get('run_id') or 'record'}.json"
            write_json_atomic(path, record)
            self.client.log_artifact(self.run_id, str(path), artifact_path="record")

    def close(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, END_STATUS.get(status, "KILLED"))
