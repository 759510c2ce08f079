"""Per-batch work, in this process or sharded over a Ray cluster
(docs/semantics.md, "Distributed runs").

Calibration, evaluation and the report each cut their work into a *worker*: an
object made once (it opens its onnxruntime session) and called once per batch,
returning a small result (a reduction, counts, moments). ``map_batches`` yields
those results in batch order; the caller folds them exactly as it always has.
Without a cluster the worker runs here. With a ``Cluster``, each Ray worker (an
actor, one onnxruntime session of ``threads`` threads) makes its own worker and
reads its own shards (``onnx_snn.io.shards``): the batches are the same, the
results come back in the same order, so the folded numbers are bit-identical.

Workers started here share this process's memory budget
(``onnx_snn.runtime.memory``) equally, so that together they plan for what one
process would; on a cluster each plans for its own machine. The Ray workers start
with the first ``map`` and live until the ``with`` block ends, so the passes of a
calibration reuse them. Per ``map`` the recipe (the model and its settings) goes
to Ray's object store once, and each Ray worker fetches it
and makes its worker at its first task. Per task: a shard (three integers) and the
data's path, or a reference to arrays the driver put in the object store once. A
worker that dies is restarted and its shard retried by Ray (``max_restarts``,
``max_task_retries``); the restarted one makes its worker again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any

from tqdm.auto import tqdm

from onnx_snn.errors import OnnxSnnError
from onnx_snn.io.data import BatchStream, DataSource, InputSpec, batches, labelled_batches
from onnx_snn.io.shards import Shard, plan_shards, sample_count, shard_source
from onnx_snn.runtime.memory import memory_budget, set_memory_limit
from onnx_snn.runtime.sessions import limit_threads
from onnx_snn.validation import check_positive_int

#: Makes a worker: picklable (a module-level class and plain arguments), so Ray can
#: ship it. The worker takes a batch (a feed, or a ``LabelledBatch``).
WorkerRecipe = Callable[[], Callable[[Any], Any]]
#: Ray restarts a dead worker this many times, and retries its task as often.
RETRIES = 3
INSTALL_HINT = "pip install 'onnx-snn[ray]'"


def _ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise OnnxSnnError(f"workers need Ray, which is not installed: {INSTALL_HINT}") from error
    return ray


class Cluster:
    """Ray workers for ``map_batches``: ``workers`` on a local Ray started here, or
    every CPU of the cluster at ``address`` (one worker per ``threads`` CPUs). Use it
    as a context manager; a Ray started here stops on exit. ``batches_per_shard``:
    batches per task (default: enough for about 4 tasks per worker)."""

    def __init__(self, workers: int | None = None, address: str | None = None,
                 threads: int = 1, batches_per_shard: int | None = None) -> None:
        if (workers is None) == (address is None):
            raise OnnxSnnError("give a number of workers or the address of a Ray cluster "
                               "(not both)")
        self.workers = None if workers is None else check_positive_int(workers, "workers")
        self.address = address
        self.threads = check_positive_int(threads, "threads per worker")
        self.batches_per_shard = None if batches_per_shard is None else check_positive_int(
            batches_per_shard, "batches per shard")
        self._started = False
        #: The Ray workers, started by the first ``map`` and kept until the end.
        self.actors: list[Any] = []

    def __enter__(self) -> Cluster:
        ray = _ray()
        if not ray.is_initialized():
            # Ray says at start that it enabled token authentication (it did): not news
            logging.getLogger("ray._private.authentication.authentication_token_setup"
                              ).setLevel(logging.ERROR)
            try:
                if self.address is None:
                    ray.init(num_cpus=self.workers * self.threads, include_dashboard=False,
                             log_to_driver=False, configure_logging=False)
                else:
                    ray.init(address=self.address, log_to_driver=False,
                             configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as error:
                raise OnnxSnnError(f"cannot start or join Ray"
                                   f"{f' at {self.address}' if self.address else ''}: "
                                   f"{str(error).splitlines()[0]}") from error
            self._started = True
        if self.workers is None:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // self.threads)
        return self

    def __exit__(self, *exc: object) -> None:
        ray = _ray()
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self._started:
            ray.shutdown()
            self._started = False

    def map(self, recipe: WorkerRecipe, data: Any, specs: list[InputSpec], batch_size: int,
            labelled: bool = False, labels: Any = None, desc: str = "",
            progress: bool = False) -> Iterator[Any]:
        """Each batch's result, in batch order, computed on the Ray workers."""
        ray = _ray()
        if not ray.is_initialized():
            raise OnnxSnnError("the cluster is not started: use it in a `with` block")
        raw = data.data if isinstance(data, DataSource) else data
        is_path = isinstance(raw, str) or hasattr(raw, "__fspath__")
        if labelled:  # the same checks of data and labels as one process makes
            labelled_batches(raw, specs, batch_size, labels)
        samples = sample_count(raw, specs)
        if samples == 0:
            raise OnnxSnnError(f"{f'{raw}: ' if is_path else ''}the data is empty: no batch "
                               "to read")
        per_shard = self.batches_per_shard or max(1, -(-samples // batch_size)
                                                  // (4 * self.workers))
        shards = plan_shards(samples, batch_size, per_shard)
        shared = raw if is_path else ray.put(raw)
        shared_labels = None if labels is None else ray.put(labels)
        if not self.actors:
            host = ray.remote(_Host).options(num_cpus=self.threads, max_restarts=RETRIES,
                                             max_task_retries=RETRIES)
            # workers started here share this machine's budget; a cluster's plan their own
            budget = memory_budget() if self.address is None else None
            share = None if budget is None else max(budget // self.workers, 1)
            self.actors = [host.remote(self.threads, share) for _ in range(self.workers)]
        # the recipe (the model) goes to the object store once; each task names it
        # (in a list, so Ray passes the reference), and a worker makes it once
        recipe_ref = [ray.put(recipe)]
        pool = ray.util.ActorPool(self.actors[:len(shards)])
        results = pool.map(lambda actor, shard: actor.run.remote(
            recipe_ref, shared, shard, specs, batch_size, labelled, shared_labels), shards)
        try:
            for shard_results in tqdm(results, total=len(shards), desc=desc, unit="shard",
                                      disable=None if progress else True, leave=False):
                yield from shard_results
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, OnnxSnnError):
                raise OnnxSnnError(str(cause)) from error
            raise


class _Host:
    """One Ray worker: the worker of the recipe it was last given, and the reading of
    its shards. A restarted one makes the worker again at its next task."""

    def __init__(self, threads: int, memory_limit: int | None = None) -> None:
        limit_threads(threads)
        if memory_limit is not None:
            set_memory_limit(memory_limit)
        self.recipe: Any = None
        self.worker: Callable[[Any], Any] | None = None

    def run(self, recipe: list[Any], data: Any, shard: Shard, specs: list[InputSpec],
            batch_size: int, labelled: bool, labels: Any) -> list[Any]:
        if recipe[0] != self.recipe:  # [a reference]: Ray leaves it unresolved
            self.worker, self.recipe = _ray().get(recipe[0])(), recipe[0]
        try:
            source, shard_labels = shard_source(data, shard, specs, batch_size, labelled,
                                                labels)
            results = []
            for batch in BatchStream(source, specs, batch_size, labelled, shard_labels):
                if labelled:  # its position in the whole data, as one process numbers it
                    batch = dataclasses.replace(batch, start=batch.start + shard.start)
                results.append(self.worker(batch))
            return results
        except OnnxSnnError as error:
            raise OnnxSnnError(f"{shard.describe(data, str(error))}: {error}") from error


def check_cluster(cluster: Any) -> None:
    """Refuse a ``cluster`` argument that is neither a ``Cluster`` nor None."""
    if cluster is not None and not isinstance(cluster, Cluster):
        raise OnnxSnnError(f"cluster must be an onnx_snn.runtime.cluster.Cluster or None, "
                           f"got {cluster!r}")


def map_batches(recipe: WorkerRecipe, data: Any, specs: list[InputSpec], batch_size: int,
                cluster: Cluster | None = None, labelled: bool = False, labels: Any = None,
                desc: str = "", progress: bool = False) -> Iterator[Any]:
    """Each batch's result of the worker ``recipe`` makes, in batch order: here, or on
    ``cluster``."""
    check_cluster(cluster)
    if cluster is not None:
        yield from cluster.map(recipe, data, specs, batch_size, labelled, labels, desc,
                               progress)
        return
    worker = recipe()
    stream = (labelled_batches(data, specs, batch_size, labels) if labelled
              else batches(data, specs, batch_size))
    for batch in tqdm(stream, total=stream.num_batches, desc=desc, unit="batch",
                      disable=None if progress else True, leave=False):
        yield worker(batch)
