"""Batch reconstruction on Dask: same results as one process, resume, bad input, lazy stacks."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_qpi import batch
from napari_qpi.batch import (
    COMBINED_TABLE,
    ClusterOptions,
    MeasureOptions,
    SchedulerError,
    collect_inputs,
    measure_batch,
    reconstruct_batch,
)
from napari_qpi.calibration import voting_indices
from napari_qpi.cli import main
from napari_qpi.io import read_image
from napari_qpi.io.tables import read_table_csv
from napari_qpi.lazy import lazy_reconstruct, reconstruct_plane
from napari_qpi.physics import OffAxisSystem, random_cells, simulate_hologram
from napari_qpi.reconstruct import iter_reconstruct

SIDECAR = '{"qpi": {"pixel_size_um": 0.25, "wavelength_nm": 532, "modality": "hologram"}}'


def holograms(n: int, size: int = 128, seed: int = 0) -> np.ndarray:
    """Simulated holograms; the seeds used here all give a clear sideband at 128^2."""
    system = OffAxisSystem(pixel_size_um=0.25)
    planes = []
    for i in range(n):
        cells = random_cells((size, size), n_cells=2, seed=seed + i, pixel_size_um=0.25)
        planes.append(simulate_hologram(cells.phase, cells.amplitude, system, seed=seed + i))
    return np.stack(planes)


def write_stack(path: Path, stack: np.ndarray, **kwargs) -> Path:
    tifffile.imwrite(path, stack, **kwargs)
    Path(str(path) + ".json").write_text(SIDECAR)
    return path


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    singles = holograms(3, seed=12)
    for i, plane in enumerate(singles):
        write_stack(folder / f"cell_{i}.tif", plane)
    write_stack(folder / "timelapse.tif", holograms(5, seed=20))
    return folder


def phase_of(path: Path) -> np.ndarray:
    image = read_image(path)
    planes = [r.phase for r in iter_reconstruct(image.data, acquisition=image.acquisition)]
    return planes[0] if len(planes) == 1 else np.stack(planes)


def test_two_workers_give_the_single_process_results(client, data, tmp_path):
    inputs = collect_inputs([data])
    assert len(inputs) == 4
    measure = MeasureOptions()
    on_dask = reconstruct_batch(inputs, tmp_path / "dask", measure=measure, client=client)
    serial = reconstruct_batch(
        inputs, tmp_path / "one", measure=measure, cluster=ClusterOptions(workers=0)
    )
    assert "cluster" in on_dask.executor and serial.executor == "in this process"
    assert on_dask.planes == serial.planes == 8 and not on_dask.failed
    workers = {f"{socket.gethostname()}:{pid}" for pid in client.run(os.getpid).values()}
    assert {o.worker for o in on_dask.outcomes} <= workers  # on the cluster, not in this process
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "dask").iterdir())
    assert not any(name.endswith(".planes") for name in names)
    for name in names:
        a, b = tmp_path / "dask" / name, tmp_path / "one" / name
        if name.endswith(".tif"):
            assert np.array_equal(tifffile.imread(a), tifffile.imread(b)), name
            image_a, image_b = read_image(a), read_image(b)
            assert image_a.acquisition == image_b.acquisition
            assert image_a.extra.get("method") == image_b.extra.get("method")
        elif name.endswith((".csv", ".csv.json")):
            assert a.read_text() == b.read_text(), name
    for source in inputs:
        expected = phase_of(source)
        written = tifffile.imread(tmp_path / "dask" / f"{source.stem}_phase.ome.tif")
        assert np.array_equal(written, expected), source.name
    stack = read_image(tmp_path / "dask" / "timelapse_phase.ome.tif")
    assert stack.data.shape == (5, 128, 128) and stack.axes == "TYX"
    table = read_table_csv(tmp_path / "dask" / "timelapse_cells.csv")
    assert set(table["frame"]) <= set(range(5)) and table.metadata["stack_shape"] == [5, 128, 128]

    combined = (tmp_path / "dask" / COMBINED_TABLE).read_text().splitlines()
    per_file = sum(len(read_table_csv(p)) for p in on_dask.tables)
    assert combined[0].startswith("file,") and len(combined) == 1 + per_file == 1 + on_dask.cells
    assert {line.split(",")[0] for line in combined[1:]} <= {p.stem for p in inputs}

    again = measure_batch(
        collect_inputs([tmp_path / "dask"], phase=True), tmp_path / "m", client=client
    )
    assert sorted(p.name for p in again.tables) == sorted(p.name for p in on_dask.tables)
    for table_path in again.tables:
        assert table_path.read_text() == (tmp_path / "dask" / table_path.name).read_text()


def test_interrupted_job_resumes_without_redoing_planes(client, tmp_path):
    source = write_stack(tmp_path / "movie.tif", holograms(12, seed=35))
    out = tmp_path / "out"

    def stop_after_four(done: int, total: int) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconstruct_batch([source], out, client=client, progress=stop_after_four)
    _wait_until_idle(client)  # tasks already running finish their planes after the interrupt
    planes = sorted((out / "movie.planes").glob("plane_*_phase.ome.tif"))
    assert 4 <= len(planes) < 12
    assert not (out / "movie_phase.ome.tif").exists()
    assert json.loads((out / "napari-qpi-reconstruct.json").read_text())["status"] == "interrupted"
    reused = {int(p.name[6:11]) for p in planes}

    seen: list[int] = []
    report = reconstruct_batch([source], out, client=client, progress=lambda d, t: seen.append(t))
    assert report.resumed == len(planes) and report.planes == 12 - len(planes)
    assert seen[-1] == 12 - len(planes)
    assert np.array_equal(tifffile.imread(out / "movie_phase.ome.tif"), phase_of(source))
    assert not (out / "movie.planes").exists()
    # the reused planes were not retrieved again: the rerun did exactly the others
    assert sorted(o.frame for o in report.outcomes) == sorted(set(range(12)) - reused)


def _executing(dask_worker) -> int:
    # a task released while it runs stays in the worker's executing set (state "cancelled")
    # until its thread returns: its plane file is written by then
    return len(dask_worker.state.executing)


def _wait_until_idle(client) -> None:
    """Until no task of the interrupted run is queued or still running on a worker (an event,
    not a time)."""
    while any(client.processing().values()) or any(client.run(_executing).values()):
        time.sleep(0.01)


def test_killed_process_then_rerun_completes_the_rest(tmp_path):
    stack = np.concatenate([holograms(4, size=512, seed=40)] * 10)
    source = write_stack(tmp_path / "long.tif", stack)
    out = tmp_path / "out"
    exe = Path(sys.executable).with_name("napari-qpi")
    command = [str(exe), "reconstruct", str(source), "--out", str(out), "--workers", "0", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    planes_dir = out / "long.planes"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(planes_dir.glob("plane_*"))) < 3:
        time.sleep(0.01)
    process.kill()
    process.wait()
    done_before = len(list(planes_dir.glob("plane_*_phase.ome.tif")))
    assert 3 <= done_before < 40 and not (out / "long_phase.ome.tif").exists()

    report = reconstruct_batch([source], out, cluster=ClusterOptions(workers=0))
    assert report.resumed == done_before and report.planes == 40 - done_before
    phase = tifffile.imread(out / "long_phase.ome.tif")
    assert phase.shape == (40, 512, 512)
    expected = [
        r.phase for r in iter_reconstruct(stack[:4], acquisition=read_image(source).acquisition)
    ]
    for i in (0, done_before - 1, 39):
        assert np.array_equal(phase[i], expected[i % 4])


def test_unreachable_scheduler_is_a_clear_error(data, tmp_path, capsys):
    with pytest.raises(SchedulerError, match=r"tcp://127\.0\.0\.1:9 within 1 s"):
        batch.connect("tcp://127.0.0.1:9", timeout_s=1)
    args = ["reconstruct", str(data), "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*args, "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert "Could not reach the Dask scheduler at tcp://127.0.0.1:9" in err
    assert "Traceback" not in err and not list((tmp_path / "o").glob("*_phase.ome.tif"))
    no_file = ["--scheduler", str(tmp_path / "nope.json"), "--connect-timeout", "0.5"]
    assert main([*args, *no_file]) == 2
    assert "No scheduler file" in capsys.readouterr().err
    assert main([*args, "--scheduler", "tcp://127.0.0.1:9", "--workers", "2"]) == 2


def test_bad_files_are_listed_and_good_ones_done_on_the_cluster(client, data, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("cell_0.tif", "cell_1.tif"):
        (folder / name).write_bytes((data / name).read_bytes())
    (folder / "broken.tif").write_bytes(b"II*\x00garbage")
    (folder / "notes.tif").write_text("exposure 10 ms\n")
    tifffile.imwrite(folder / "dark.tif", np.zeros((64, 64), dtype=np.uint16))
    write_stack(folder / "flicker.tif", np.stack([holograms(1)[0], np.zeros((128, 128), "u2")]))
    out = tmp_path / "out"
    address = client.scheduler.address
    code = main(["reconstruct", str(folder), "--out", str(out), "--quiet", "--scheduler", address])
    assert code == 1
    captured = capsys.readouterr()
    assert "2 file(s), 3 plane(s)" in captured.out and "4 failed" in captured.out
    failed = {line.split(": ")[1].split("/")[-1]: line for line in captured.err.splitlines()}
    assert set(failed) == {"broken.tif", "notes.tif", "dark.tif", "flicker.tif"}
    assert "text file" in failed["notes.tif"] and "all zero" in failed["dark.tif"]
    assert "plane 1" in failed["flicker.tif"]
    assert sorted(p.name for p in out.glob("*_phase.ome.tif")) == [
        "cell_0_phase.ome.tif",
        "cell_1_phase.ome.tif",
    ]
    manifest = json.loads((out / "napari-qpi-reconstruct.json").read_text())
    statuses = {Path(k).name: v["status"] for k, v in manifest["files"].items()}
    assert statuses["cell_0.tif"] == "done" and statuses["broken.tif"] == "failed"
    assert manifest["files"][str(folder / "dark.tif")]["reason"]


def test_full_disk_stops_with_a_message_and_keeps_finished_outputs(
    data, tmp_path, monkeypatch, capsys
):
    real_imwrite = tifffile.imwrite
    calls = {"n": 0}

    def imwrite_until_full(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            Path(path).write_bytes(b"II*\x00partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_imwrite(path, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", imwrite_until_full)
    out = tmp_path / "out"
    args = ["reconstruct", str(data), "--out", str(out), "--quiet", "--workers", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "The disk is full" in err and "run the same command again" in err
    assert "Traceback" not in err
    kept = sorted(out.glob("*_phase.ome.tif"))
    assert [p.name for p in kept] == ["cell_0_phase.ome.tif", "cell_1_phase.ome.tif"]
    assert all(read_image(p).data.shape == (128, 128) for p in kept)
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    status = json.loads((out / "napari-qpi-reconstruct.json").read_text())["status"]
    assert status == "stopped: disk full"

    monkeypatch.setattr(tifffile, "imwrite", real_imwrite)
    assert main(args) == 0
    assert "2 skipped" in capsys.readouterr().out
    assert len(list(out.glob("*_phase.ome.tif"))) == 4


def test_a_lazily_opened_stack_reads_only_the_planes_viewed(tmp_path, monkeypatch):
    import npe2

    from napari_qpi.io import images

    stack = holograms(6, seed=36)
    path = write_stack(tmp_path / "big.tif", stack, compression="zlib")
    reads: list[int] = []
    real_read = images._read_tiff_page

    def counting(file, index):
        reads.append(index)
        return real_read(file, index)

    monkeypatch.setattr(images, "_read_tiff_page", counting)
    monkeypatch.setenv("NAPARI_QPI_LAZY_THRESHOLD_MB", "0")
    hologram, phase_layer = npe2.read([str(path)], stack=False, plugin_name="napari-qpi")
    data, kwargs, kind = hologram
    assert kind == "image" and type(data).__module__.startswith("dask")
    assert "contrast_limits" in kwargs and phase_layer[2] == "image"
    voting = {index[0] for index in voting_indices(stack.shape)}
    assert set(reads) == voting  # the hologram's first plane, and those that vote on the sign
    reads.clear()
    np.asarray(phase_layer[0][4])
    np.asarray(phase_layer[0][4])
    assert reads == [4]  # the dropped hologram's phase: one plane read, once

    acquisition = read_image(tmp_path / "big.tif").acquisition
    reads.clear()
    phase = lazy_reconstruct(data, acquisition=acquisition)
    assert phase.data.shape == (6, 128, 128) and set(reads) == voting
    reads.clear()
    plane = np.asarray(phase.data[4])
    np.asarray(phase.data[4])
    assert reads == [4]
    assert np.array_equal(plane, reconstruct_plane(stack, 4, acquisition=acquisition).phase)
    assert np.array_equal(plane, next(iter_reconstruct(stack[4:5], acquisition=acquisition)).phase)


def test_the_viewer_reads_only_the_plane_it_shows(make_napari_viewer, tmp_path, monkeypatch):
    from napari_qpi.io import images

    path = write_stack(tmp_path / "movie.tif", holograms(8, seed=36), compression="zlib")
    reads: list[int] = []
    real_read = images._read_tiff_page

    def counting(file, index):
        reads.append(index)
        return real_read(file, index)

    monkeypatch.setattr(images, "_read_tiff_page", counting)
    monkeypatch.setenv("NAPARI_QPI_LAZY_THRESHOLD_MB", "0")
    viewer = make_napari_viewer()
    layer, phase_layer = viewer.open(path, plugin="napari-qpi")
    assert layer.data.shape == (8, 128, 128) == phase_layer.data.shape
    voting = {index[0] for index in voting_indices(layer.data.shape)}
    shown = {int(viewer.dims.point[0])}
    viewer.dims.set_point(0, 5)
    assert set(reads) <= {5} | voting | shown and 5 in reads

    acquisition = read_image(path).acquisition
    phase = lazy_reconstruct(layer.data, acquisition=acquisition)
    viewer.add_image(phase.data, name="phase", contrast_limits=(-1.0, 4.0))
    viewer.dims.set_point(0, 6)
    assert set(reads) <= {5, 6} | voting | shown and 6 in reads


def test_a_network_is_loaded_once_per_worker(client, tmp_path, register_tiny_prnet):
    name = register_tiny_prnet("tiny-batch-prnet")
    # 128^2: a network, like the classical method, refuses a plane without clear fringes
    source = write_stack(tmp_path / "h.tif", holograms(8, size=128, seed=0))
    report = reconstruct_batch([source], tmp_path / "out", method=name, client=client)
    assert report.planes == 8 and not report.failed
    assert tifffile.imread(tmp_path / "out" / "h_phase.ome.tif").shape == (8, 128, 128)
    builds: dict[str, set[int]] = {}
    for outcome in report.outcomes:
        builds.setdefault(outcome.worker, set()).add(outcome.retriever_builds)
    assert all(len(counts) == 1 for counts in builds.values())


def test_a_scheduler_file_finds_the_cluster(client, data, tmp_path, capsys):
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text(json.dumps({"address": client.scheduler.address}))
    out = tmp_path / "out"
    args = ["reconstruct", str(data / "cell_0.tif"), "--out", str(out), "--quiet"]
    assert main([*args, "--scheduler", str(scheduler_file)]) == 0
    assert "on the cluster at" in capsys.readouterr().out
    assert (out / "cell_0_phase.ome.tif").is_file()


def _fft_threads_of_a_task() -> int:
    """In a worker: the FFT threads a batch task runs with, whatever the worker's environment."""
    from napari_qpi.batch import _limit_worker_threads
    from napari_qpi.threads import fft_workers, set_fft_workers

    omp = os.environ.pop("OMP_NUM_THREADS", None)  # Dask's nanny sets it to 1; users may not
    set_fft_workers(None)
    try:
        _limit_worker_threads(network=False)
        return fft_workers()
    finally:
        if omp is not None:
            os.environ["OMP_NUM_THREADS"] = omp


def test_batch_workers_run_one_fft_thread_each(client, data, tmp_path):
    from napari_qpi.threads import fft_workers

    here = fft_workers()
    report = reconstruct_batch(collect_inputs([data]), tmp_path / "out", client=client)
    assert report.planes == 8 and not report.failed
    # each worker process shares the cores with the others: 1 FFT thread each, not one per core
    assert set(client.run(fft_workers).values()) == {1}
    addresses = list(client.scheduler_info()["workers"])
    tasks = [client.submit(_fft_threads_of_a_task, workers=[a], pure=False) for a in addresses]
    assert client.gather(tasks) == [1] * len(addresses)
    assert fft_workers() == here  # this process keeps its own setting
