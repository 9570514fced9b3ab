"""The "platform concurrency" suite: one replica's throughput on a pipeline's one-item executions, by the compute
config's `runtime.concurrency`.

dtlpy's agent runs up to `concurrency` executions of a service at once, each in its own thread calling the
module's function (`predict_items`) with its input (from a pipeline node: typically one item). Here executions of
one prompt item (one question) each are run by C threads, through dtlpy's own `ModelAdapter.predict_items`, with
only the platform's HTTP layer faked (tests/fake_platform.py), and each faked platform call (the item's download,
its annotations list, upload and delete) taking `latency` seconds: 0, and 50 ms, about what one call to the
platform's API takes from a pod. With the batching layer, the items of concurrent executions share forward passes,
and one execution's platform calls overlap another's model time.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import dtlpy as dl
import pytest

from adapters.dataloop.model_adapter import ModelAdapter
from tests.fake_platform import FakePlatform, linked_item
from tests.prompt_factory import current_item

MODEL = "bench-model"


def offline_model(configuration: dict[str, Any]) -> dl.Model:
    """A model entity as the platform hands one to the service, built offline."""
    model = dl.Model.from_json(_json={"id": f"{MODEL}-id", "name": MODEL, "configuration": configuration,
                                      "inputType": "text", "outputType": "text", "status": "pre-trained"},
                               client_api=dl.client_api, project=None, package=dl.Package())
    model.update = lambda *args, **kwargs: model
    return model


def slow_platform(monkeypatch: pytest.MonkeyPatch, latency: float) -> None:
    """Every faked platform call, and every item download, takes `latency` seconds more (until `monkeypatch` undoes
    it)."""
    def slowed(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            time.sleep(latency)
            return function(*args, **kwargs)
        return call

    for owner, name in ((dl.repositories.Annotations, "list"), (dl.repositories.Annotations, "upload"),
                        (dl.repositories.Annotations, "delete"), (dl.entities.Item, "download")):
        monkeypatch.setattr(owner, name, slowed(getattr(owner, name)))


def run_executions(adapter: ModelAdapter, items: list[dl.Item], concurrency: int) -> tuple[float, float]:
    """Seconds, and CPU seconds of this process, for `concurrency` threads to run one `predict_items([item])`
    execution per item."""
    pending = list(reversed(items))
    lock, failures = threading.Lock(), []

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                item = pending.pop()
            try:
                adapter.predict_items([item])
            except Exception as error:  # noqa: BLE001 - reported after the run
                failures.append(error)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if failures:
        raise RuntimeError(f"{len(failures)} executions failed: {failures[0]}")
    return seconds, cpu


def run_platform_concurrency(module_name: str, model_folder: Path, texts: list[str], configuration: dict[str, Any],
                             concurrencies: tuple[int, ...], latencies: tuple[float, ...]) -> dict[str, Any]:
    """items/s of one replica for each (latency, concurrency): one one-question prompt item per execution."""
    results: dict[str, Any] = {}
    cpu_results: dict[str, Any] = {}
    importlib.import_module(module_name)
    with pytest.MonkeyPatch.context() as monkeypatch, tempfile.TemporaryDirectory(prefix="bench-items-") as folder:
        platform = FakePlatform().install(monkeypatch)
        adapter = ModelAdapter(model_entity=offline_model({"module_name": module_name, "model_path": str(model_folder),
                                                           **configuration}))
        items = [platform.add_item(linked_item(Path(folder), f"{i}.json", current_item({"1": [text]}), f"item-{i}"))
                 for i, text in enumerate(texts)]
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            run_executions(adapter, items[:4], 2)  # warm-up
        for latency in latencies:
            with monkeypatch.context() as slow:
                slow_platform(slow, latency)
                rates, per_cpu = {}, {}
                for concurrency in concurrencies:
                    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # dtlpy's bars
                        seconds, cpu = run_executions(adapter, items, concurrency)
                    rates[str(concurrency)] = round(len(items) / seconds, 2)
                    per_cpu[str(concurrency)] = round(len(items) / cpu, 2)
                results[f"latency_{int(latency * 1000)}ms"] = rates
                cpu_results[f"latency_{int(latency * 1000)}ms"] = per_cpu
                best = max(rates, key=rates.get)
                print(f"  {module_name} items/s by concurrency, platform calls of {int(latency * 1000)} ms: "
                      + ", ".join(f"{c}: {r}" for c, r in rates.items()) + f" (best at {best}); items per CPU "
                      "second: " + ", ".join(f"{c}: {r}" for c, r in per_cpu.items()), flush=True)
    return {"module": module_name, "executions": len(texts), "items_per_s": results, "items_per_cpu_s": cpu_results}
