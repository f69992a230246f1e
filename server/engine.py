"""The one engine behind every transport: sessions in, batched chunks through the model, events out.

A session becomes *ready* when it holds a full chunk of features (or its last, shorter chunk once
the client's audio is over). The scheduler awaits the first ready session, gathers more for at
most `max_wait_ms` or until `max_batch`, and runs one encoder step and one search step for the
whole batch in a worker thread, so the event loop keeps serving sockets meanwhile. Each session
is in at most one batch at a time, so its states advance strictly in order.

Sessions of different ages, granularities and decoding methods share a batch: encoder states are
typed and batch-first (`stack_states`), the encoder takes one granularity per row, and the search
runs once per decoding method over its rows.
"""
from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from asr.decoding import GreedySearch, ModifiedBeamSearch
from asr.decoding.hypothesis import SearchState
from asr.model.conformer import SUBSAMPLING_FACTOR
from asr.model.state import stack_states, unstack_states
from asr.recognizer import Recognizer
from server.audio_input import AudioInput
from server.config import EngineConfig
from server.metrics import Metrics
from server.options import StreamOptions
from server.session import Done, Failed, Final, Partial, Progress, Session, endpoint_reason

log = logging.getLogger("server.engine")


class CapacityError(RuntimeError):
    """The server holds its maximum number of sessions (or is draining); try again later."""


@dataclass
class _Work:
    """One session's share of a batch: its next chunk of features, taken on the event loop."""

    session: Session
    features: torch.Tensor  # (T, F), T <= chunk frames; T == 0 only for a stream that just ends
    granularity: str
    last: bool  # the final chunk of the stream


class StepCosts:
    """Compute seconds per stream of a model step, per granularity and batch size (rounded up to a
    power of two: a stream's share of a step falls as batches grow): the median of the latest
    WINDOW steps, so that one slow step (a collection, a busy neighbour) does not decide. Only steps
    whose rows all ran at one granularity are measured; a mixed batch says nothing about either."""

    WARMUP_STEPS = 2  # first steps of a level at a batch size, not counted: new shapes allocate and warm caches
    MIN_STEPS = 5  # steps measured before a level's cost is trusted
    WINDOW = 9

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], deque[float]] = {}
        self._skipped: dict[tuple[str, int], int] = {}
        self.batch = 1  # bucket of the latest step: the load the next decision is about

    @staticmethod
    def bucket(rows: int) -> int:
        return 1 << max(0, rows - 1).bit_length()

    def record(self, granularities: list[str], seconds: float) -> float | None:
        """Add one step; returns the granularity's cost now, or None when the step is not measured
        (a mixed batch, or a warm-up step)."""
        self.batch = self.bucket(len(granularities))
        if len(set(granularities)) != 1:
            return None
        key = (granularities[0], self.batch)
        if self._skipped.get(key, 0) < self.WARMUP_STEPS:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return None
        steps = self._steps.setdefault(key, deque(maxlen=self.WINDOW))
        steps.append(seconds / len(granularities))
        return statistics.median(steps)

    def cost(self, granularity: str) -> float | None:
        """Seconds per stream at the latest batch size, once measured over MIN_STEPS steps."""
        steps = self._steps.get((granularity, self.batch), ())
        return statistics.median(steps) if len(steps) >= self.MIN_STEPS else None


class Engine:
    PATIENCE_STEPS = 3 * (StepCosts.WARMUP_STEPS + StepCosts.MIN_STEPS)  # steps auto waits for a measurement

    def __init__(self, recognizer: Recognizer, config: EngineConfig = EngineConfig(),
                 metrics: Metrics | None = None, model_name: str = "model") -> None:
        self.recognizer = recognizer
        self.model_name = model_name
        self.model = recognizer.model.eval()
        self.config = config
        self.metrics = metrics or Metrics()
        self.chunk_frames = SUBSAMPLING_FACTOR * config.chunk_size  # feature frames per chunk
        self.frame_seconds = recognizer.frame_seconds  # one encoder frame
        self.granularities = tuple(self.model.encoder.granularities)
        self.searches = {"greedy": GreedySearch(), "beam": ModifiedBeamSearch(beam=config.beam)}
        self.sessions: dict[str, Session] = {}
        self.draining = False
        self.auto_level = 0  # index into granularities for sessions that asked for "auto"
        self._latency = 0.0  # smoothed partial-result latency, seconds
        self._last_auto_change = 0.0
        self.step_costs = StepCosts()
        self._steps_at_level = 0  # model steps since auto's last move
        self._ready: asyncio.Queue[Session] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task: asyncio.Task | None = None

    @property
    def device(self) -> torch.device:
        return self.recognizer.device

    # ----- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._schedule(), name="engine-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for session in list(self.sessions.values()):
            self.close(session)
        self._executor.shutdown(wait=True)

    # ----- sessions ------------------------------------------------------------------------
    def open(self, options: StreamOptions) -> Session:
        """A new session, or CapacityError when the server is full or draining."""
        if self.draining:
            self.metrics.refused.labels(reason="draining").inc()
            raise CapacityError("the server is shutting down")
        if len(self.sessions) >= self.config.max_sessions:
            self.metrics.refused.labels(reason="capacity").inc()
            raise CapacityError(f"the server is at capacity ({self.config.max_sessions} sessions)")
        granularity = self.granularities[self.auto_level] if options.granularity == "auto" else options.granularity
        session = Session(
            options=options,
            audio=AudioInput(options.encoding, options.sample_rate, self.model.config.features),
            encoder_state=self.model.encoder.init_state(1, self.config.left_context, self.device),
            search=SearchState(),
            granularity=granularity,
            features=torch.empty(0, self.model.config.features.num_mel_bins),
        )
        self.sessions[session.id] = session
        self.metrics.sessions_opened.inc()
        self.metrics.active_sessions.set(len(self.sessions))
        log.info("session %s opened: %s", session.id, options)
        return session

    def feed(self, session: Session, data: bytes) -> None:
        """Add client audio. Raises AudioError (nothing of the stream is lost) or ValueError."""
        if session.ending or session.closed:
            raise ValueError("audio after the end of the stream")
        max_seconds = self.config.max_stream_seconds
        before = session.audio.seconds_received
        frames = session.audio.accept(data)
        if max_seconds and session.audio.seconds_received > max_seconds:
            raise ValueError(f"the stream is longer than the server's limit of {max_seconds:g} s")
        session.last_activity = time.monotonic()
        self.metrics.audio_seconds.inc(session.audio.seconds_received - before)
        self._add_features(session, frames)

    async def wait_for_room(self, session: Session) -> None:
        """Backpressure: return once the stream has at most `max_pending_chunks` chunks waiting, so
        a client that sends faster than real time (a file) is read only as fast as it is decoded
        and a stream's memory stays bounded whatever the length of its audio."""
        limit = self.config.max_pending_chunks * self.chunk_frames
        while session.features.shape[0] > limit and not session.closed:
            session.room.clear()
            await session.room.wait()

    def request_endpoint(self, session: Session) -> None:
        """The client ends the current segment now (e.g. push-to-talk released)."""
        session.endpoint_requested = True
        session.last_activity = time.monotonic()
        self._enqueue(session, force=True)

    def end(self, session: Session) -> None:
        """The client's audio is over: decode what is left, send the last final, then Done."""
        if session.ending:
            return
        session.ending = True
        session.last_activity = time.monotonic()
        self._add_features(session, session.audio.finish())
        self._enqueue(session, force=True)

    def close(self, session: Session) -> None:
        """Forget a session (the client left, or the stream is over); idempotent."""
        if session.closed:
            return
        session.closed = True
        session.room.set()
        self.sessions.pop(session.id, None)
        self.metrics.active_sessions.set(len(self.sessions))
        log.info("session %s closed after %.1f s of audio", session.id, session.audio.seconds_received)

    def _add_features(self, session: Session, frames: torch.Tensor) -> None:
        if frames.shape[0] == 0:
            return
        was_short = session.features.shape[0] < self.chunk_frames
        session.features = torch.cat([session.features, frames])
        if was_short and session.features.shape[0] >= self.chunk_frames:
            session.chunk_ready_at = time.monotonic()
        self._enqueue(session)

    def _has_work(self, session: Session) -> bool:
        return (session.features.shape[0] >= self.chunk_frames or session.endpoint_requested
                or (session.ending and not session.done))

    def _enqueue(self, session: Session, force: bool = False) -> None:
        if session.scheduled or session.closed or session.done:
            return
        if force or self._has_work(session):
            session.scheduled = True
            self._ready.put_nowait(session)

    # ----- scheduling ----------------------------------------------------------------------
    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._ready.get()]
            waited_from = loop.time()
            deadline = waited_from + self.config.max_wait_ms / 1000
            while len(batch) < self.config.max_batch:
                try:
                    batch.append(self._ready.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._ready.get(), remaining))
                except TimeoutError:
                    break
            self.metrics.queue_delay.observe(loop.time() - waited_from)
            work = [self._take_work(s) for s in batch if not s.closed]
            work = [w for w in work if w is not None]
            if not work:
                continue
            started = time.perf_counter()
            try:
                await loop.run_in_executor(self._executor, self._step, work)
            except Exception as error:  # a model failure must not take the server down
                log.exception("batch of %d failed", len(work))
                for item in work:
                    self._fail(item.session, "internal", f"the recognizer failed: {error}")
                continue
            compute = time.perf_counter() - started
            per_stream = self.step_costs.record([w.granularity for w in work], compute)
            self._steps_at_level += 1
            if per_stream is not None:
                self.metrics.stream_step_seconds.labels(granularity=work[0].granularity,
                                                        batch=str(self.step_costs.batch)).set(per_stream)
            self.metrics.batch_size.observe(len(work))
            self.metrics.step_seconds.observe(compute)
            for item in work:
                self._deliver(item)
            self._adapt_granularity()

    def _take_work(self, session: Session) -> _Work | None:
        chunk = session.features[: self.chunk_frames]
        full = chunk.shape[0] == self.chunk_frames
        if not full and not session.ending and not session.endpoint_requested:
            session.scheduled = False
            return None
        if not full and session.endpoint_requested and not session.ending:
            chunk = chunk[:0]  # the forced endpoint applies to what has been decoded so far
        session.features = session.features[chunk.shape[0] :]
        last = session.ending and session.features.shape[0] == 0
        if session.options.granularity == "auto":
            session.granularity = self.granularities[self.auto_level]
        return _Work(session, chunk, session.granularity, last)

    @torch.inference_mode()
    def _step(self, work: list[_Work]) -> None:
        """Encoder then search for the rows that have features; runs in the model thread."""
        rows = [w for w in work if w.features.shape[0] > 0]
        if rows:
            device = self.device
            lens = torch.tensor([w.features.shape[0] for w in rows], device=device)
            feats = torch.nn.utils.rnn.pad_sequence([w.features for w in rows], batch_first=True).to(device)
            state = stack_states([w.session.encoder_state for w in rows])
            enc = self.model.encoder(feats, lens, state=state, chunk_size=self.config.chunk_size,
                                     granularity=[w.granularity for w in rows])
            for w, new_state, frames in zip(rows, unstack_states(enc.state), enc.frame_lens.tolist()):
                w.session.encoder_state = new_state
                w.session.frames_decoded += frames
            if enc.out.shape[1]:
                spans = enc.spans
                for method, search in self.searches.items():
                    index = [i for i, w in enumerate(rows) if w.session.options.decoding == method]
                    if index:
                        picked = torch.tensor(index, device=device)
                        search.step(self.model, enc.out[picked], enc.out_lens[picked],
                                    [rows[i].session.search for i in index],
                                    None if spans is None else spans[picked])

    # ----- results -------------------------------------------------------------------------
    def _deliver(self, item: _Work) -> None:
        session = item.session
        if session.closed:
            return
        now = time.monotonic()
        if item.features.shape[0]:
            latency = now - session.chunk_ready_at if session.chunk_ready_at else 0.0
            self.metrics.partial_latency.observe(latency)
            self._latency = 0.8 * self._latency + 0.2 * latency
            session.chunk_ready_at = now if session.features.shape[0] >= self.chunk_frames else 0.0
        hyp = session.search.best
        last_end = hyp.ends[-1] if hyp.tokens else None
        reason = "client" if session.endpoint_requested else endpoint_reason(
            session.options.endpoint, session.frames_decoded, session.segment_start, last_end, self.frame_seconds)
        if item.last or reason is not None:
            self._finish_segment(session, reason or "end of audio")
        elif session.options.interim_results:
            text = self.recognizer.tokenizer.decode(list(hyp.tokens))
            if text != session.last_partial:
                session.last_partial = text
                session.events.put_nowait(Partial(session.segment, text, session.granularity,
                                                  session.frames_decoded * self.frame_seconds))
        session.endpoint_requested = False
        if item.last:
            session.done = True
            seconds = session.frames_decoded * self.frame_seconds
            session.events.put_nowait(Done(seconds))
            log.info("session %s done: %d segment(s), %.1f s", session.id, session.segment, seconds)
        session.scheduled = False
        session.room.set()
        self._enqueue(session)

    def _finish_segment(self, session: Session, reason: str) -> None:
        hyp = session.search.best
        if hyp.tokens:
            transcript = self.recognizer.to_transcript(hyp)
            start = transcript.tokens[0].start if transcript.tokens else session.segment_start * self.frame_seconds
            end = session.frames_decoded * self.frame_seconds
            timed = session.options.timestamps
            session.events.put_nowait(Final(session.segment, transcript.text, start, end,
                                            transcript.words if timed else (), session.granularity,
                                            transcript.tokens if timed else ()))
            log.debug("session %s segment %d final (%s): %s", session.id, session.segment, reason, transcript.text)
            session.segment += 1
        session.segment_start = session.frames_decoded
        session.last_partial = ""
        # A fresh decoder context for the next segment; frame numbering continues.
        session.search = SearchState(num_frames=session.search.num_frames)
        session.events.put_nowait(Progress(session.frames_decoded * self.frame_seconds))

    def _fail(self, session: Session, code: str, message: str) -> None:
        self.metrics.errors.labels(code=code).inc()
        session.events.put_nowait(Failed(code, message))
        session.scheduled = False
        self.close(session)

    def _adapt_granularity(self) -> None:
        """auto granularity: coarser while partial results come later than the target, finer
        again once they come well within it. One move per `auto_interval_s`.

        Coarser tokens only help if they make steps cheaper, and on a small model on CPU the
        merge can cost what it saves. So auto measures each level's cost per stream at the current
        batch size before moving on from it, and skips a level that is *dominated*: not at least
        `auto_min_gain` cheaper than some finer level, which would be more accurate for about the
        same time. Levels not measured yet are tried; a dominated level that auto is on is left for
        the coarsest level below it that is not. A level that cannot be measured (its streams
        always share batches with streams that named another granularity) is left unmeasured
        after PATIENCE_STEPS steps."""
        target = self.config.latency_target_ms / 1000
        now = time.monotonic()
        if now - self._last_auto_change < self.config.auto_interval_s or len(self.granularities) < 2:
            return
        level = self.auto_level
        why = ""
        if self._latency > target:
            here = self._dominated(level)
            if here is None and self._steps_at_level < self.PATIENCE_STEPS:
                return  # measure this level first: whether to move, and where, depends on it
            coarser = [j for j in range(level + 1, len(self.granularities)) if not self._dominated(j)]
            if coarser:
                level = coarser[0]
            elif here:
                level = max(i for i in range(level) if not self._dominated(i))
                why = f", {self.granularities[self.auto_level]} steps not cheaper"
        elif self._latency < target / 2 and level > 0:
            level = max(i for i in range(level) if not self._dominated(i))
        if level != self.auto_level:
            log.info("auto granularity: %s -> %s (latency %.0f ms, target %.0f ms%s)",
                     self.granularities[self.auto_level], self.granularities[level], 1000 * self._latency,
                     1000 * target, why)
            self.auto_level = level
            self._last_auto_change = now
            self._steps_at_level = 0
            self.metrics.auto_level.set(level)

    def _dominated(self, level: int) -> bool | None:
        """Whether some finer level costs less than 1 / (1 - auto_min_gain) times what `level`
        costs per stream at the current batch size; None while `level` is not measured. The
        finest level is never dominated."""
        costs = [self.step_costs.cost(g) for g in self.granularities[: level + 1]]
        if costs[-1] is None:
            return None
        keep = 1 - self.config.auto_min_gain
        return any(c is not None and costs[-1] > keep * c for c in costs[:-1])

    def idle_sessions(self, now: float) -> list[Session]:
        """Sessions that sent nothing for longer than the idle timeout."""
        timeout = self.config.idle_timeout_s
        return [s for s in self.sessions.values() if timeout and not s.ending and now - s.last_activity > timeout]
