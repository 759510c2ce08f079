"""Sharding over a local Ray cluster of 2 workers: the results are the same bits as
one process (docs/semantics.md, "Distributed runs"), a killed worker changes nothing,
and bad input or a missing Ray gives one clear line."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from zoo_models import ZooBuilder

from onnx_snn import HookFactory, SpikingSession, convert
from onnx_snn.cli import main
from onnx_snn.errors import OnnxSnnError
from onnx_snn.io.data import labelled_batches
from onnx_snn.measure.evaluation import AccuracyWorker, snn_accuracy
from onnx_snn.measure.report import make_report
from onnx_snn.runtime.chunks import BYTES_PER_CARRIED_VALUE
from onnx_snn.runtime.cluster import Cluster


@pytest.fixture(scope="module")
def ray_started():
    """One local Ray of 2 CPUs for the module (its start takes seconds)."""
    with Cluster(workers=2) as started:
        yield started


@pytest.fixture
def cluster(ray_started):
    """2 workers on that Ray, stopped after the test (they hold its CPUs)."""
    with Cluster(workers=2) as joined:
        yield joined


@pytest.fixture(scope="module")
def resnet(tmp_path_factory) -> dict:
    """A ResNet-18 on 32x32 inputs (random weights), exported, and its SNN."""
    built = ZooBuilder(tmp_path_factory.mktemp("zoo")).build("resnet18", "torchscript")
    snn = convert(str(built.ann), str(built.calib), progress=False).model
    return {"ann": built.ann, "calib": built.calib, "test": built.test, "snn": snn}


def test_calibration_gives_the_same_scales_as_one_process(cluster, resnet) -> None:
    percentile = HookFactory("99.9%", per_channel=True)  # TopK elements per batch
    for settings in ({}, {"preset": "best"}, {"hook_factory": percentile}):
        # best: threshold balancing, one pass per depth
        alone = convert(str(resnet["ann"]), str(resnet["calib"]), progress=False,
                        batch_size=16, **settings)
        sharded = convert(str(resnet["ann"]), str(resnet["calib"]), progress=False,
                          batch_size=16, cluster=cluster, **settings)
        assert alone.model.SerializeToString() == sharded.model.SerializeToString()
        assert alone.calibration.to_dict() == sharded.calibration.to_dict()


def test_accuracy_counts_are_those_of_one_process(cluster, resnet) -> None:
    """Against a loop over the batches written here, with the worker run in this process."""
    x, y = np.load(resnet["test"])["x"], np.load(resnet["test"])["y"]
    steps = [4, 16, 32]
    worker = AccuracyWorker(resnet["snn"], steps)
    correct = sum(worker(batch)[0] for batch in labelled_batches(
        {"x": x, "y": y}, worker.session.batch_specs, 7))
    expected = {t: c / len(y) for t, c in zip(steps, correct)}
    assert snn_accuracy(resnet["snn"], str(resnet["test"]), timesteps=steps, batch_size=7,
                        cluster=cluster) == expected
    assert snn_accuracy(resnet["snn"], x, y, timesteps=steps, batch_size=7,
                        cluster=cluster) == expected


def test_the_report_is_the_same_bits(cluster, resnet) -> None:
    kwargs = {"ann": resnet["ann"], "timesteps": 16, "batch_size": 8, "progress": False}
    alone = make_report(resnet["snn"], str(resnet["test"]), **kwargs)
    sharded = make_report(resnet["snn"], str(resnet["test"]), cluster=cluster, **kwargs)
    assert json.dumps(alone.to_dict()) == json.dumps(sharded.to_dict())
    for name, points in alone.scatter.items():
        np.testing.assert_array_equal(points, sharded.scatter[name])


def test_a_killed_worker_is_restarted_and_the_result_is_exact(ray_started, resnet) -> None:
    """One shard a batch; a worker's process is killed while shards are running: Ray
    restarts it and retries its shard, and the counts do not change."""
    steps = [8, 64]
    expected = snn_accuracy(resnet["snn"], str(resnet["test"]), timesteps=steps,
                            batch_size=2)
    result = {}
    with Cluster(workers=2, batches_per_shard=1) as killer:  # joins the module's Ray
        run = threading.Thread(target=lambda: result.update(snn_accuracy(
            resnet["snn"], str(resnet["test"]), timesteps=steps, batch_size=2,
            cluster=killer)))
        run.start()
        deadline = time.monotonic() + 60
        while not killer.actors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert killer.actors, "the workers did not start"
        time.sleep(0.5)  # 16 shards queued, the first ones running
        ray.kill(killer.actors[0], no_restart=False)
        run.join(timeout=120)
    assert result == expected


def test_a_bad_shard_names_the_file_and_rows(cluster, resnet, tmp_path: Path) -> None:
    test = np.load(resnet["test"])
    x = test["x"].copy()
    x[13, 0, 0, 0] = np.nan
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=x, y=test["y"])
    with pytest.raises(OnnxSnnError, match=rf"{bad}: rows 8-15: .*non-finite|{bad}: rows 8-15"):
        snn_accuracy(resnet["snn"], str(bad), timesteps=[4], batch_size=8, cluster=cluster)


def test_the_command_line_takes_workers(ray_started, resnet, tmp_path: Path) -> None:
    """--workers 2 on the command line (it joins the Ray this module started), also with
    a memory limit whose half, each worker's share, cuts a batch of 7 into 3-step calls."""
    snn = tmp_path / "snn.onnx"
    snn.write_bytes(resnet["snn"].SerializeToString())
    session = SpikingSession(resnet["snn"])
    share = (session.output_bytes(16, 7) + 3 * session.step_bytes
             + session.carried_values * BYTES_PER_CARRIED_VALUE)
    assert SpikingSession(resnet["snn"], memory_limit=share).plan(16, 7).steps == 3
    runs = []
    for extra in ([], ["--workers", "2"],
                  ["--workers", "2", "--batch-size", "7", "--memory-limit", str(2 * share)]):
        out = tmp_path / f"eval{len(runs)}.json"
        assert main(["eval", str(snn), "--data", str(resnet["test"]), "--timesteps", "4,16",
                     "--json", str(out), *extra]) == 0
        runs.append(json.loads(out.read_text()))
    assert runs[0] == runs[1] == runs[2]


def test_without_ray_workers_say_how_to_install_it(monkeypatch, capsys, resnet,
                                                   tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(OnnxSnnError, match=r"pip install 'onnx-snn\[ray\]'"):
        Cluster(workers=2).__enter__()
    snn = tmp_path / "snn.onnx"
    snn.write_bytes(resnet["snn"].SerializeToString())
    assert main(["eval", str(snn), "--data", str(resnet["test"]), "--workers", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("onnx-snn: error: workers need Ray, which is not installed: "
                    "pip install 'onnx-snn[ray]'")]
