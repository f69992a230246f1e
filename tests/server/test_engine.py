"""Engine rules without a transport: endpoint rules, auto granularity moving with latency, and a
stream's memory staying bounded however long its audio."""
from __future__ import annotations

import asyncio

import pytest
import torch

from server.config import EngineConfig
from server.engine import Engine, StepCosts
from server.options import EndpointOptions, StreamOptions
from server.session import Done, Final, endpoint_reason
from tests.server.conftest import audio, final_text, running, s16le, server_config, stream_file

RULES = EndpointOptions(silence_after_speech=1.0, silence_without_speech=5.0, max_segment=20.0)


@pytest.mark.parametrize("decoded, start, last_end, expected", [
    (100, 0, 80, None),  # 0.8 s of silence after speech
    (100, 0, 75, "silence_after_speech"),  # 1.0 s
    (120, 0, None, None),  # 4.8 s of silence, no speech yet
    (125, 0, None, "silence_without_speech"),
    (600, 100, 599, "max_segment"),  # a 20 s segment, still talking
    (599, 100, 598, None),
])
def test_endpoint_rules(decoded, start, last_end, expected):
    assert endpoint_reason(RULES, decoded, start, last_end, 0.04) == expected


def test_zero_turns_every_rule_off():
    off = EndpointOptions(0, 0, 0)
    assert endpoint_reason(off, 10_000, 0, None, 0.04) is None
    assert endpoint_reason(off, 10_000, 0, 1, 0.04) is None


def _measure(engine, granularity, per_stream, streams=8, steps=StepCosts.WARMUP_STEPS + StepCosts.MIN_STEPS):
    for _ in range(steps):
        engine.step_costs.record([granularity] * streams, per_stream * streams)


def test_auto_granularity_goes_coarser_under_latency_and_back(recognizer):
    engine = Engine(recognizer, server_config(latency_target_ms=100, auto_interval_s=0).engine)
    session = engine.open(StreamOptions(granularity="auto"))
    pinned = engine.open(StreamOptions(granularity="full"))
    engine._latency = 0.5
    engine._adapt_granularity()
    assert engine.auto_level == 0  # the current level's cost is measured first
    _measure(engine, "full", 0.010)
    engine._adapt_granularity()
    assert engine.granularities[engine.auto_level] == "coarse"
    session.features = pinned.features = torch.zeros(engine.chunk_frames, session.features.shape[1])
    assert engine._take_work(session).granularity == "coarse"
    assert engine._take_work(pinned).granularity == "full"  # a named granularity is never moved
    engine._latency = 0.01
    engine._adapt_granularity()
    assert engine.auto_level == 0


def test_auto_granularity_moves_only_to_a_coarser_level_measured_cheaper(recognizer):
    """Under latency, auto measures its level, tries the coarser one, measures that, and leaves it
    again if it is less than auto_min_gain (10%) cheaper per stream at the current batch size: it
    would cost accuracy and buy no time."""
    engine = Engine(recognizer, server_config(latency_target_ms=100, auto_interval_s=0).engine)
    costs = engine.step_costs
    engine._latency = 0.5
    _measure(engine, "full", 1.0, steps=StepCosts.WARMUP_STEPS)  # warm-up steps are not counted
    _measure(engine, "full", 0.010, steps=StepCosts.MIN_STEPS - 1)
    costs.record(["full", "coarse"] * 4, 0.010)  # nor is a mixed batch
    engine._adapt_granularity()
    assert engine.auto_level == 0
    _measure(engine, "full", 0.010, steps=1)
    engine._adapt_granularity()
    assert engine.auto_level == 1  # full measured, coarse not yet: tried
    _measure(engine, "coarse", 0.0095, steps=StepCosts.WARMUP_STEPS + StepCosts.MIN_STEPS - 1)
    engine._adapt_granularity()
    assert engine.auto_level == 1  # still measuring coarse
    _measure(engine, "coarse", 0.0095, steps=1)  # 5% cheaper
    assert costs.cost("coarse") == pytest.approx(0.0095) and costs.cost("full") == pytest.approx(0.010)
    engine._adapt_granularity()
    assert engine.auto_level == 0  # back to full for the accuracy
    engine._adapt_granularity()
    assert engine.auto_level == 0  # and it stays there
    _measure(engine, "full", 0.005, streams=3)  # a batch of 3 (bucket 4): a load not measured at coarse
    engine._adapt_granularity()
    assert engine.auto_level == 1


def test_auto_granularity_keeps_a_coarser_level_that_pays(recognizer):
    engine = Engine(recognizer, server_config(latency_target_ms=100, auto_interval_s=0).engine)
    _measure(engine, "full", 0.010, streams=16)
    _measure(engine, "coarse", 0.007, streams=16)  # 30% cheaper
    engine._latency = 0.5
    for _ in range(3):
        engine._adapt_granularity()
        assert engine.granularities[engine.auto_level] == "coarse"
    engine._latency = 0.01
    engine._adapt_granularity()
    assert engine.auto_level == 0  # load gone: back to the finest


def test_auto_granularity_still_moves_when_mixed_batches_leave_it_unmeasured(recognizer):
    engine = Engine(recognizer, server_config(latency_target_ms=100, auto_interval_s=0).engine)
    engine._latency = 0.5
    for _ in range(Engine.PATIENCE_STEPS - 1):
        engine.step_costs.record(["full", "coarse"] * 4, 0.08)  # auto streams beside pinned ones
        engine._steps_at_level += 1
        engine._adapt_granularity()
        assert engine.auto_level == 0
    engine._steps_at_level += 1
    engine._adapt_granularity()
    assert engine.auto_level == 1


def test_auto_granularity_skips_levels_a_finer_one_matches(recognizer):
    """fine is not 10% cheaper than full and coarse not 10% cheaper than medium: auto uses full and
    medium only, both ways."""
    engine = Engine(recognizer, server_config(latency_target_ms=100, auto_interval_s=0).engine)
    engine.granularities = ("full", "fine", "medium", "coarse")  # the engine only names levels
    for name, cost in (("full", 0.010), ("fine", 0.0095), ("medium", 0.008), ("coarse", 0.0075)):
        _measure(engine, name, cost)
    engine._latency = 0.5
    for _ in range(3):
        engine._adapt_granularity()
        assert engine.granularities[engine.auto_level] == "medium"
    engine.auto_level = 3  # e.g. reached while coarse was not measured yet
    engine._adapt_granularity()
    assert engine.granularities[engine.auto_level] == "medium"
    engine._latency = 0.01
    engine._adapt_granularity()
    assert engine.auto_level == 0


def test_auto_granularity_reacts_to_real_latency(recognizer):
    """With a target no CPU can meet, an auto stream's results move to the coarser granularity once
    the finer one is measured (a few steps)."""
    async def scenario():
        async with running(recognizer, server_config(latency_target_ms=0.001, auto_interval_s=0)) as service:
            return await stream_file(service.websocket.port, audio(3.0), granularity="auto")

    messages, code = asyncio.run(scenario())
    used = [m["granularity"] for m in messages if m["type"] in ("partial", "final")]
    assert code == 1000 and used[0] == "full" and "coarse" in used


def test_a_streams_memory_does_not_grow_with_its_length(recognizer):
    """State sizes after 10 s and after 60 s of audio are equal: the attention cache holds the
    left context only, segments reset the hypothesis, and backpressure bounds waiting features."""
    async def scenario():
        async with running(recognizer, server_config(max_pending_chunks=4)) as service:
            engine = service.engine
            session = engine.open(StreamOptions(endpoint=EndpointOptions(0, 0, max_segment=3.0)))
            sizes = {}
            piece = s16le(audio(1.0, seed=5))
            for second in range(1, 61):
                await engine.wait_for_room(session)
                engine.feed(session, piece)
                if second in (10, 60):
                    while session.features.shape[0] >= engine.chunk_frames:
                        await asyncio.sleep(0.01)
                    state = sum(t.numel() for t in _tensors(session.encoder_state))
                    sizes[second] = (state, len(session.search.best.tokens) <= 200,
                                     session.features.shape[0] <= 5 * engine.chunk_frames)
            engine.end(session)
            events = []
            while not events or not isinstance(events[-1], Done):
                events.append(await session.events.get())
            return sizes, [e for e in events if isinstance(e, Final)]

    sizes, finals = asyncio.run(scenario())
    assert sizes[10] == sizes[60] and sizes[60][1:] == (True, True)
    assert len(finals) >= 15  # a 3 s segment limit over 60 s
    assert all(f.end - f.start <= 3.2 for f in finals)


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        return [tree]
    if hasattr(tree, "__dataclass_fields__"):
        return [t for name in tree.__dataclass_fields__ for t in _tensors(getattr(tree, name))]
    if isinstance(tree, (list, tuple)):
        return [t for item in tree for t in _tensors(item)]
    return []


def test_a_segment_without_speech_ends_quietly(recognizer):
    """silence_without_speech restarts a segment without a final: clients never see empty finals."""
    engine = Engine(recognizer, server_config().engine)
    session = engine.open(StreamOptions(granularity="full"))
    session.frames_decoded = 130  # 5.2 s, no token emitted
    engine._finish_segment(session, "silence_without_speech")
    events = []
    while not session.events.empty():
        events.append(session.events.get_nowait())
    assert not [e for e in events if isinstance(e, Final)]
    assert session.segment == 0 and session.segment_start == 130


@pytest.mark.parametrize("setting, value", [("max_batch", 0), ("latency_target_ms", 0.0), ("auto_min_gain", 1.0),
                                            ("auto_min_gain", -0.1), ("chunk_size", 0)])
def test_engine_settings_out_of_range_name_their_flag(setting, value):
    with pytest.raises(ValueError, match="--" + setting.replace("_", "-")):
        EngineConfig(**{setting: value})


def test_a_levels_cost_is_a_median_that_one_slow_step_does_not_move():
    costs = StepCosts()
    for seconds in [1.0] * StepCosts.WARMUP_STEPS + [0.080] * (StepCosts.MIN_STEPS - 1):
        costs.record(["full"] * 8, seconds)
    assert costs.cost("full") is None  # not yet MIN_STEPS measured steps
    costs.record(["full"] * 8, 0.800)  # a collection, a busy neighbour
    assert costs.cost("full") == pytest.approx(0.010)
    costs.record(["full"] * 2, 0.010)
    assert costs.cost("full") is None  # another batch size is another load, measured on its own
