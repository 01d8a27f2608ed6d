"""A batch on a Dask cluster: each input scene is one task (``superres --scheduler``).

Needs the ``dask`` extra (``pip install "difffusr[dask]"``, the ``distributed`` package);
imported only when a batch runs on a cluster.

- :func:`connect` turns ``--scheduler ADDRESS`` or ``local:N`` (a local cluster of N worker
  processes, one thread each) into a ``distributed.Client``.
- :func:`run_on_cluster` submits one :func:`scene_task` per input and collects the results in
  input order. A task that raises an unexpected error is retried (``retries``); a task whose
  worker dies is rescheduled by Dask on another worker. Either way the retry finds the scene's
  partial file and progress record and resumes them (the settings fingerprint and the block
  digests are checked as for ``--resume``), so the product is the same as an uninterrupted run's.
- A worker loads the models of a set of options once and keeps them for every task it runs
  (:func:`worker_models`, a per-process cache keyed on the options that choose the models).
- Workers report progress as Dask events (``Worker.log_event``) on a topic of the batch; the
  client adds them up into a :class:`~difffusr_cli.superres.progress.BatchState` for its sink.

Files are read and written by the workers: inputs and outputs must be on storage every worker
sees at the same paths (a shared file system).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from difffusr_cli.errors import DifffusrError, InputError
from difffusr_cli.superres.batch import BatchReport, SceneJob, error_line
from difffusr_cli.superres.models import Models
from difffusr_cli.superres.options import SuperresOptions
from difffusr_cli.superres.outputs import RunSummary
from difffusr_cli.superres.progress import BatchState, ProgressSink, RateMeter

#: Seconds between two progress events of one task (the scheduler keeps a bounded event log).
EVENT_INTERVAL = 0.5

_EXTRA_HINT = 'install the dask extra: pip install "difffusr[dask]"'


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise InputError(f"a Dask scheduler needs the distributed package; {_EXTRA_HINT}") from None
    return distributed


def connect(spec: str) -> tuple[Any, Callable[[], None]]:
    """A client for ``spec``: ``local:N`` (a local cluster of N processes) or a scheduler address.

    Returns:
        The ``distributed.Client`` and a function that closes it (and the local cluster).

    Raises:
        InputError: bad ``spec``, no ``distributed`` installed, or no scheduler at the address.
    """
    distributed = _distributed()
    if spec.startswith("local:"):
        try:
            workers = int(spec.split(":", 1)[1])
        except ValueError:
            workers = 0
        if workers < 1:
            raise InputError(f"--scheduler {spec}: expected local:N with N >= 1 workers")
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,  # a worker's restart is reported by the batch itself
        )
        client = distributed.Client(cluster)

        def close() -> None:
            client.close()
            cluster.close()

        return client, close
    try:
        client = distributed.Client(spec, timeout="30s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"--scheduler {spec}: cannot connect ({error_line(exc)})") from None
    return client, client.close


_MODELS: dict[tuple, tuple[Models, torch.device, torch.dtype]] = {}
_MODELS_LOCK = threading.Lock()
#: How many times this process loaded models (tests check a worker loads them once).
_LOADS = [0]


def _model_key(options: SuperresOptions) -> tuple:
    return (
        options.rgb_model,
        options.fusion_model,
        options.fusion,
        options.device,
        options.precision,
    )


def worker_models(options: SuperresOptions) -> tuple[Models, torch.device, torch.dtype]:
    """The models ``options`` name on this process's device, loaded on first use and kept."""
    from difffusr_cli.device import select_device, select_precision
    from difffusr_cli.superres.models import load_models
    from difffusr_cli.weights import StderrReporter

    key = _model_key(options)
    with _MODELS_LOCK:
        if key not in _MODELS:
            device = select_device(options.device)
            dtype = select_precision(options.precision, device)
            _MODELS[key] = (load_models(options, device, StderrReporter()), device, dtype)
            _LOADS[0] += 1
        return _MODELS[key]


def load_count() -> int:
    """How many times this process loaded models (``client.run(load_count)``)."""
    return _LOADS[0]


class _EventSink:
    """A worker-side sink: progress of one task as Dask events on the batch's topic."""

    def __init__(self, topic: str, index: int) -> None:
        from distributed import get_worker

        self._worker = get_worker()
        self._topic, self._index = topic, index
        self._meter = RateMeter()
        self._sent = 0.0

    def _send(self, event: str, **fields: Any) -> None:
        self._worker.log_event(self._topic, {"index": self._index, "event": event, **fields})

    def _progress(self) -> None:
        self._sent = time.monotonic()
        self._send("advance", done=self._meter.done, rate=self._meter.rate)

    def on_start(self, label: str, total: int) -> None:
        self._meter = RateMeter(total)
        self._send("start", total=total)

    def on_advance(self, n: int) -> None:
        self._meter.advance(n)
        if time.monotonic() - self._sent >= EVENT_INTERVAL:
            self._progress()

    def on_end(self) -> None:
        self._progress()

    def on_message(self, text: str) -> None:
        self._send("message", text=text)


def scene_task(
    job: SceneJob,
    options: SuperresOptions,
    topic: str,
    on_block_done: Callable[[int], None],
) -> RunSummary:
    """Run one input on a worker (the Dask task of :func:`run_on_cluster`).

    A user error (bad input, other settings) is returned as a ``failed`` summary: retrying
    cannot fix it. Anything else is raised, and Dask retries the task.
    """
    from difffusr_cli.superres.many import failed_summary, run_job

    sink = _EventSink(topic, job.index)
    sink._send("running")
    models, device, dtype = worker_models(options)
    # A retry finds what the failed attempt left: its partial file to resume, or its product.
    job = replace(job, complete=job.target.exists() and not options.overwrite)
    try:
        return run_job(
            job, replace(options, resume=True), models, device, dtype, sink, on_block_done
        )
    except DifffusrError as exc:
        return failed_summary(job, error_line(exc))


@dataclass
class _Tally:
    """The client's view of the batch, from the workers' events and the finished tasks."""

    scenes: int
    started: float = field(default_factory=time.perf_counter)
    totals: dict[int, int] = field(default_factory=dict)
    done: dict[int, int] = field(default_factory=dict)
    rates: dict[int, float] = field(default_factory=dict)
    running: set[int] = field(default_factory=set)
    ended: dict[str, int] = field(default_factory=lambda: {"done": 0, "skipped": 0, "failed": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def state(self) -> BatchState:
        with self.lock:
            rate = sum(self.rates[i] for i in self.running if i in self.rates) or None
            patches_done, patches_total = sum(self.done.values()), sum(self.totals.values())
            finished = sum(self.ended.values())
            unseen = self.scenes - finished - len(self.running)
            mean = patches_total / len(self.totals) if self.totals else 0.0
            left = patches_total - patches_done + unseen * mean
            return BatchState(
                scenes=self.scenes,
                done=self.ended["done"],
                skipped=self.ended["skipped"],
                failed=self.ended["failed"],
                running=len(self.running),
                patches_done=patches_done,
                patches_total=patches_total,
                rate=rate,
                elapsed=time.perf_counter() - self.started,
                eta=left / rate if rate and self.totals else None,
            )


def run_on_cluster(
    client: Any,
    jobs: list[SceneJob],
    options: SuperresOptions,
    sink: ProgressSink,
    report: BatchReport,
    on_block_done: Callable[[int], None],
    keep_going: bool,
    retries: int,
) -> list[RunSummary]:
    """Run the checked ``jobs`` as tasks on ``client``'s cluster; summaries in input order.

    Raises:
        DifffusrError: without ``keep_going``, the first failed input (the rest is cancelled).
        Exception: without ``keep_going``, a task's error once its retries are spent.
    """
    from difffusr_cli.io import partial_path_for
    from difffusr_cli.superres.many import emit_summary, failed_summary
    from difffusr_cli.superres.resume import progress_path_for

    distributed = _distributed()
    batch = uuid.uuid4().hex[:12]
    topic = f"difffusr-progress-{batch}"
    tally = _Tally(len(jobs))
    on_batch = getattr(sink, "on_batch", None)
    summaries: dict[int, RunSummary] = {}

    def update() -> None:
        if on_batch is not None:
            on_batch(tally.state())

    def handle(event: tuple[float, dict]) -> None:
        msg = event[1]
        index = int(msg["index"])
        kind = msg.get("event")
        with tally.lock:
            if index in summaries:
                return
            if kind == "running":
                tally.running.add(index)
            elif kind == "start":
                tally.totals[index], tally.done[index] = int(msg["total"]), 0
            elif kind == "advance":
                tally.done[index] = int(msg["done"])
                if msg.get("rate"):
                    tally.rates[index] = float(msg["rate"])
        if kind == "running":
            report.running(index)
        elif kind == "message":
            sink.on_message(str(msg.get("text", "")))
        update()

    def finish(job: SceneJob, summary: RunSummary) -> None:
        with tally.lock:
            summaries[job.index] = summary
            tally.running.discard(job.index)
            tally.rates.pop(job.index, None)
            status = {"written": "done", "skipped": "skipped", "failed": "failed"}
            tally.ended[status[summary.status]] += 1
        report.finished(job.index, summary)
        emit_summary(sink, summary, options.quiet)
        update()

    for job in jobs:
        if job.error is not None:
            finish(job, failed_summary(job, job.error))
    # Workers get absolute paths (their working directory may differ) and no opened scene.
    runnable = [
        replace(
            job, scene=None, source=Path(os.path.abspath(job.source)), target=job.target.absolute()
        )
        for job in jobs
        if job.error is None
    ]
    if options.overwrite:  # discard interrupted runs now: a retry must resume its own attempt
        for job in runnable:
            partial_path_for(job.target).unlink(missing_ok=True)
            progress_path_for(job.target).unlink(missing_ok=True)
    client.subscribe_topic(topic, handle)
    futures = {
        client.submit(
            scene_task,
            job,
            options,
            topic,
            on_block_done,
            key=f"difffusr-{batch}-{job.index}",
            retries=retries,
            pure=False,
        ): job
        for job in runnable
    }
    try:
        for future in distributed.as_completed(list(futures)):
            job = futures[future]
            if future.status == "error":
                exc = future.exception()
                if not keep_going:
                    finish(job, failed_summary(job, error_line(exc)))
                    raise exc
                summary = failed_summary(job, error_line(exc))
            else:
                summary = future.result()
            finish(job, summary)
            if summary.status == "failed" and not keep_going:
                raise DifffusrError(summary.error)
    finally:
        client.unsubscribe_topic(topic)
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)
        if on_batch is not None:
            on_batch(tally.state())
    return [summaries[job.index] for job in jobs]
