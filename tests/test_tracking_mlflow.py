"""MLflow against a real tracking server (tests/helpers/mlflow_server.py: `mlflow server` on 127.0.0.1 with a SQLite
store, started and killed by these tests): a tiny `hgbench run --mlflow URI` read back through `MlflowClient` and
every figure checked against the record; the server killed mid-run (the run finishes, one warning line, what was not
sent listed in the record, then sent by `hgbench export mlflow`), and exports that never make a second run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="make install installs the mlflow extra")

from helpers.mlflow_server import MlflowServer  # noqa: E402
from helpers.tracked_figures import EPOCH_TAGS, FINAL_TAGS  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from hgbench import cli  # noqa: E402
from hgbench.spec.config import RunConfig  # noqa: E402
from hgbench.tracking import fanout  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One server for the tests that leave it running (each test's runs carry their own run ids)."""
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def own_server(tmp_path: Path):
    """A server of the test's own, which it may kill."""
    srv = MlflowServer(tmp_path / "mlflow").start()
    try:
        yield srv
    finally:
        srv.stop()


def argv(tiny: RunConfig, epochs: int, *extra: str) -> list[str]:
    return [
        *("run", "--case", "hg1", "--device", "cpu", "--workers", "0", "--data-dir", tiny.data_dir),
        *("--epochs", str(epochs), "--batch", "4", "--input-res", "64", "--limit-train", "8", "--limit-val", "6"),
        *("--out", tiny.out, "--checkpoint-dir", tiny.checkpoint_dir, "--quiet", "--no-tensorboard"),
        *extra,
    ]


def the_record(tiny: RunConfig) -> tuple[Path, dict]:
    [path] = list(Path(tiny.out).rglob("*.json"))
    return path, json.loads(path.read_text())


def the_run(uri: str, record: dict, experiment: str = "hgbench"):
    """The one MLflow run carrying the record's run id (a second one would be a duplicate)."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`hgbench.run_id` = '{record['run_id']}'")
    assert len(runs) == 1
    return client, runs[0]


def check_run_matches_the_record(client: MlflowClient, mlrun, record: dict) -> None:
    run_id, last = mlrun.info.run_id, len(record["results"]["epochs"])
    for name, read in EPOCH_TAGS.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
        assert history == [(e["epoch"], pytest.approx(read(e), rel=1e-12)) for e in record["results"]["epochs"]], name
    assert not any(name.startswith("gpu/") for name in mlrun.data.metrics)  # null on a CPU: never sent as 0
    for name, read in FINAL_TAGS.items():
        assert [(m.step, m.value) for m in client.get_metric_history(run_id, name)] == [(last, read(record))], name
    params = mlrun.data.params
    assert params["config.lr"] == str(record["config"]["lr"])
    assert params["config.epochs"] == str(record["config"]["epochs"])
    assert params["spec.num_stacks"] == str(record["spec"]["num_stacks"])
    assert params["model.params"] == str(record["model"]["params"])
    tags = mlrun.data.tags
    assert tags["hgbench.case"] == "hg1"
    assert tags["hgbench.as_built"] == "false"
    assert tags["hgbench.machine"] == record["machine_info"]["machine_id"]
    assert tags["hgbench.git_commit"] == str(record["commit_info"]["id"])
    assert tags["hgbench.status"] == "finished"
    assert mlrun.info.status == "FINISHED"
    [artifact] = client.list_artifacts(run_id, "record")
    sent = json.loads(Path(client.download_artifacts(run_id, artifact.path)).read_text())
    assert sent["results"]["pckh"] == record["results"]["pckh"]
    assert sent["status"] == "finished"


def test_a_run_logs_every_figure_of_its_record_to_a_tracking_server(
    tiny: RunConfig, server: MlflowServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv(tiny, 2, "--mlflow", server.uri, "--mlflow-experiment", "pose")) == 0
    assert "warning" not in capsys.readouterr().err
    path, record = the_record(tiny)
    client, mlrun = the_run(server.uri, record, "pose")
    check_run_matches_the_record(client, mlrun, record)
    assert record["tracking"]["mlflow"] == {
        "uri": server.uri,
        "experiment": "pose",
        "mlflow_run_id": mlrun.info.run_id,
        "error": None,
        "unsent": [],
    }
    for i in range(4):  # four fixed validation people, each epoch
        pictures = [a.path for a in client.list_artifacts(mlrun.info.run_id, f"pictures/val_{i}")]
        assert pictures == [f"pictures/val_{i}/epoch_0001.jpg", f"pictures/val_{i}/epoch_0002.jpg"]
    # Exporting the same record again finds the run by its tags and adds nothing: no second run, no step twice.
    assert cli.main(["export", "mlflow", str(path), "--uri", server.uri, "--experiment", "pose"]) == 0
    assert "nothing new" in capsys.readouterr().out
    client, mlrun = the_run(server.uri, record, "pose")
    check_run_matches_the_record(client, mlrun, record)


def test_a_resumed_run_continues_its_mlflow_run_without_a_step_twice(tiny: RunConfig, server: MlflowServer) -> None:
    from dataclasses import replace

    from hgbench.run.runner import run
    from hgbench.tracking import TrackingOptions

    options = TrackingOptions(tensorboard=False, mlflow=True, mlflow_uri=server.uri)
    cfg = replace(tiny, epochs=2)
    first = run(cfg, progress=False, stop_after_epoch=1, tracking=options)
    record = json.loads(first.record_path.read_text())
    client, mlrun = the_run(server.uri, record)
    assert mlrun.info.status == "KILLED"  # interrupted: the MLflow run says so until it is resumed
    run(cfg, progress=False, resume=True, tracking=options)
    record = json.loads(first.record_path.read_text())
    client, mlrun = the_run(server.uri, record)  # the same run, not a second one
    check_run_matches_the_record(client, mlrun, record)  # epochs 1 and 2 once each


def test_a_server_killed_mid_run_costs_the_run_nothing_and_export_sends_the_rest_later(
    tiny: RunConfig, own_server: MlflowServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = own_server
    logged = fanout.Tracking.log_epoch

    def kill_after_the_first_epoch(self, entry, predictions, index) -> None:
        logged(self, entry, predictions, index)
        if entry["epoch"] == 1:
            server.stop()  # the real server, gone between two epochs

    monkeypatch.setattr(fanout.Tracking, "log_epoch", kill_after_the_first_epoch)
    assert cli.main(argv(tiny, 3, "--mlflow", server.uri)) == 0
    err = capsys.readouterr().err
    path, record = the_record(tiny)
    assert record["status"] == "finished"
    assert Path(record["checkpoint"]).is_file()
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1, err
    assert warnings[0].startswith("hgbench: warning: MLflow logging stopped (")
    assert f"hgbench export mlflow RECORD --uri {server.uri}" in warnings[0]
    state = record["tracking"]["mlflow"]
    assert state["error"] is not None
    unsent = [(u["kind"], u["step"]) for u in state["unsent"]]
    assert unsent == [("epoch", 2), ("pictures", 2), ("epoch", 3), ("pictures", 3), ("final", 3), ("record", None)]
    assert state["unsent"][3]["names"] == ["val_0", "val_1", "val_2", "val_3"]
    assert set(state["unsent"][0]["names"]) >= set(EPOCH_TAGS)
    assert set(state["unsent"][4]["names"]) >= set(FINAL_TAGS)
    # What the server holds is exactly what the record says was sent: epoch 1 alone.
    server.start()
    client, mlrun = the_run(server.uri, record)
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "loss/train")] == [1]
    assert "final/pckh_Mean" not in mlrun.data.metrics
    # The export sends the rest, into the same MLflow run; a second export adds nothing.
    assert cli.main(["export", "mlflow", str(path), "--uri", server.uri]) == 0
    assert "epochs 2, 3, final figures" in capsys.readouterr().out
    assert cli.main(["export", "mlflow", str(path), "--uri", server.uri]) == 0
    assert "nothing new" in capsys.readouterr().out
    client, mlrun = the_run(server.uri, record)
    check_run_matches_the_record(client, mlrun, record)


def test_a_server_down_from_the_start_is_one_warning_and_every_figure_listed(
    tiny: RunConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers.mlflow_server import free_port

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert cli.main(argv(tiny, 1, "--mlflow", uri, "--no-flip-test")) == 0
    err = capsys.readouterr().err
    _, record = the_record(tiny)
    assert record["status"] == "finished"
    assert sum("warning" in line for line in err.splitlines()) == 1
    kinds = [(u["kind"], u["step"]) for u in record["tracking"]["mlflow"]["unsent"]]
    assert kinds == [("epoch", 1), ("pictures", 1), ("final", 1), ("record", None)]
