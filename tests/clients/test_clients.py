"""Both command-line clients against a real server on loopback: the transcribe client's output
for a multi-minute file equals the server's streamed result, SRT/VTT parse back, the mic client
streams a WAV at real-time pace, and every failure is one clear line with a non-zero exit."""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys

import numpy as np
import soundfile as sf

from clients import mic, transcribe
from tests.clients.conftest import server_thread
from tests.server.conftest import audio, stream_file


def _long_recording(path, seconds=120.0):
    """Speech-like bursts with pauses, so the default endpoint rules cut segments."""
    pieces = []
    for i in range(int(seconds // 5)):
        pieces += [audio(3.5, seed=i), np.zeros(int(16000 * 1.5), np.float32)]
    x = np.concatenate(pieces)
    sf.write(path, x, 16000, subtype="PCM_16")
    return sf.read(path, dtype="float32")[0]


def _parse_cues(text: str, separator: str) -> list[tuple[float, float, str]]:
    clock = r"(\d\d):(\d\d):(\d\d)" + re.escape(separator) + r"(\d\d\d)"
    cues = []
    for match in re.finditer(clock + r" --> " + clock + r"\n(.+)\n", text):
        g = [int(v) for v in match.groups()[:8]]
        start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
        end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
        cues.append((start, end, match.group(9)))
    return cues


def test_transcribe_client_equals_the_streamed_result_and_writes_every_format(tmp_path, recognizer, capsys):
    wav = tmp_path / "long.wav"
    x = _long_recording(wav)
    out = tmp_path / "out"
    with server_thread(recognizer) as service:
        code = transcribe.main(["--server", f"127.0.0.1:{service.grpc.port}", str(wav), "--format", "json", "srt",
                                "vtt", "text", "--output", str(out), "--granularity", "full", "--quiet"])
        future = asyncio.run_coroutine_threadsafe(
            _ws_stream(service.websocket.port, x), service_loop(service))
        messages = future.result(120)
    assert code == 0
    result = json.loads((out / "long.json").read_text())
    streamed = [m for m in messages if m["type"] == "final"]
    assert len(result["segments"]) == len(streamed) >= 5  # 20 s max_segment cuts the random model's babble
    assert [s["text"] for s in result["segments"]] == [m["text"] for m in streamed]
    assert abs(result["duration"] - x.size / 16000) < 0.1 and result["model"] and result["granularity"] == "full"
    assert all(w["start"] <= w["end"] for s in result["segments"] for w in s["words"])
    srt = _parse_cues((out / "long.srt").read_text(), ",")
    vtt_text = (out / "long.vtt").read_text()
    assert vtt_text.startswith("WEBVTT\n\n")
    vtt = _parse_cues(vtt_text, ".")
    expected = [(round(s["start"], 3), round(s["end"], 3), s["text"]) for s in result["segments"]]
    assert srt == vtt == expected
    assert all(a[1] <= b[0] + 1e-3 for a, b in zip(srt, srt[1:]))
    assert (out / "long.txt").read_text().splitlines() == [s["text"] for s in result["segments"]]


def service_loop(service):
    return service.engine._task.get_loop()


async def _ws_stream(port, x):
    messages, _ = await stream_file(port, x, granularity="full",
                                    endpoint={"silence_after_speech": 1.0, "silence_without_speech": 5.0,
                                              "max_segment": 20.0})
    return messages


def test_failures_are_one_line_each_and_other_files_finish(tmp_path, recognizer, capsys):
    good = tmp_path / "good.wav"
    sf.write(good, audio(2.0), 16000, subtype="PCM_16")
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not audio")
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    with server_thread(recognizer) as service:
        code = transcribe.main(["--server", f"127.0.0.1:{service.grpc.port}", str(not_audio), str(good), str(empty),
                                "--granularity", "full", "--quiet", "--jobs", "2"])
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and any("notes.wav" in e for e in errors) and any("empty" in e for e in errors)
    assert "Traceback" not in captured.err
    assert captured.out.strip() == recognizer.transcribe(sf.read(good, dtype="float32")[0], 16000,
                                                         full_context=False, granularity="full").text


def test_unreachable_server_and_full_server_are_clear(tmp_path, recognizer, capsys):
    wav = tmp_path / "a.wav"
    sf.write(wav, audio(1.0), 16000, subtype="PCM_16")
    assert transcribe.main(["--server", "127.0.0.1:9", str(wav), "--connect-timeout", "1", "--quiet"]) == 1
    assert "cannot reach the server" in capsys.readouterr().err
    with server_thread(recognizer, max_sessions=0) as service:
        assert transcribe.main(["--server", f"127.0.0.1:{service.grpc.port}", str(wav), "--quiet"]) == 1
        assert "capacity" in capsys.readouterr().err
        assert mic.main(["--url", f"ws://127.0.0.1:{service.websocket.port}/", "--wav", str(wav)]) == 1
        assert "refused" in capsys.readouterr().err
    assert mic.main(["--url", "ws://127.0.0.1:9/", "--wav", str(wav), "--connect-timeout", "1"]) == 1
    assert "cannot connect" in capsys.readouterr().err


def test_mic_client_streams_a_wav_at_real_time_pace(tmp_path, recognizer, capsys):
    wav = tmp_path / "talk.wav"
    sf.write(wav, audio(2.0), 16000, subtype="PCM_16")
    with server_thread(recognizer) as service:
        import time

        started = time.perf_counter()
        code = mic.main(["--url", f"ws://127.0.0.1:{service.websocket.port}/", "--wav", str(wav), "--json",
                         "--granularity", "full"])
        elapsed = time.perf_counter() - started
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and elapsed >= 1.9  # paced like a microphone, not sent at once
    assert [e["type"] for e in events][0] == "ready" and events[-1]["type"] == "done"
    finals = " ".join(e["text"] for e in events if e["type"] == "final")
    assert finals == recognizer.transcribe(sf.read(wav, dtype="float32")[0], 16000, full_context=False,
                                           granularity="full").text


def test_mic_without_a_microphone_is_a_clear_message():
    result = subprocess.run([sys.executable, "-m", "clients.mic", "--url", "ws://127.0.0.1:9/"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
