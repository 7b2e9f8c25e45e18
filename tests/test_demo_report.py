"""The demo's report from fixture data (not the full demo): event reading, the step runner's
skips, the HTML, and a headless-Chromium check that the page renders, its images load and its
audio elements have playable sources."""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiolm_jax.demo.events import read_scalars
from audiolm_jax.demo.report import curve_tags, write_report
from audiolm_jax.demo.runner import StepRunner

RATE = 16000


def _write_events(logdir: Path, series: dict[str, list[float]], steps: list[int]) -> None:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(logdir))
    for tag, values in series.items():
        for step, value in zip(steps, values):
            writer.add_scalar(tag, value, step)
    writer.close()


def _fixture(root: Path) -> dict:
    """runs/ with event files, samples/<name>/ with WAVs and a spectrogram: what the demo leaves."""
    from audiolm_jax.generate.outputs import write_spectrogram

    steps = [0, 10, 20, 30]
    _write_events(root / "runs" / "codec" / "tensorboard",
                  {"train/generator/reconstruction": [9.0, 6.0, 5.0, 4.5],
                   "train/generator/grad_norm": [1, 2, 3, 4], "eval/q4/mel_distance": [2, 1.5, 1.2, 1.1]},
                  steps)
    _write_events(root / "runs" / "stage_semantic" / "tensorboard",
                  {"train/loss": [5.0, 4.0, 3.5, 3.2], "eval/loss": [5.1, 4.2, 3.9, 3.7]}, steps)
    t = np.arange(int(1.5 * RATE)) / RATE
    wav = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    folder = root / "samples" / "voice a-0001"      # a space: the page must escape its URLs
    folder.mkdir(parents=True)
    for stem in ("original", "prompt", "continuation", "reconstruction"):
        sf.write(folder / f"{stem}.wav", wav if stem != "prompt" else wav[:RATE], RATE,
                 subtype="PCM_16")
    write_spectrogram(folder / "spectrogram.png", np.stack([wav, wav]), RATE, 1.0, ["a", "b"])
    return {"samples": [{"name": "voice a-0001", "folder": folder.name, "voice": "voice_a",
                         "prompt_seconds": 1.0, "seconds": 1.5,
                         "reconstruction_mel_distance": 0.5,
                         "continuation_mel_distance_after_prompt": 1.5}]}


def test_read_scalars_round_trip_and_truncated_tail(tmp_path):
    _write_events(tmp_path / "tb", {"train/loss": [3.0, 2.0, 1.0]}, [0, 5, 10])
    assert read_scalars(tmp_path / "tb") == {"train/loss": [(0, 3.0), (5, 2.0), (10, 1.0)]}
    # A record cut mid-write (a run killed while logging) ends the file, it does not raise.
    (event_file,) = (tmp_path / "tb").iterdir()
    event_file.write_bytes(event_file.read_bytes()[:-7])
    assert read_scalars(tmp_path / "tb")["train/loss"] == [(0, 3.0), (5, 2.0)]
    assert read_scalars(tmp_path / "missing") == {}


def test_curve_tags_keep_losses_and_drop_rates():
    tags = ["train/perf/step_time", "train/generator/grad_norm", "eval/loss", "train/loss",
            "eval/q4/mel_distance", "train/generator/reconstruction", "train/mlm_accuracy"]
    assert curve_tags(tags) == ["train/loss", "train/mlm_accuracy",
                                "train/generator/reconstruction", "eval/loss",
                                "eval/q4/mel_distance"]


def test_runner_skips_finished_steps(tmp_path, capsys):
    calls = []
    runner = StepRunner(tmp_path / ".done", total=2)
    assert runner.run("a", "step a", lambda: calls.append("a") or {"x": 1}) == {"x": 1}
    with pytest.raises(RuntimeError):
        runner.run("b", "step b", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert not runner.marker("b").exists()           # a failed step is redone next time
    again = StepRunner(tmp_path / ".done", total=2)
    assert again.run("a", "step a", lambda: calls.append("again")) == {"x": 1}
    assert calls == ["a"] and again.timings()["a"]["skipped"]
    assert "skipped" in capsys.readouterr().out
    assert any(line.startswith("step a") for line in again.summary_lines())


def _report(tmp_path: Path) -> Path:
    samples = _fixture(tmp_path)
    counts = {"train": {"utterances": 3, "semantic_tokens": 100, "acoustic_frames": 200,
                        "acoustic_tokens": 800, "vocab_size": 163}}
    timings = {"codec": {"title": "train the codec", "seconds": 12.5, "skipped": False}}
    return write_report(tmp_path, runs=tmp_path / "runs", samples=samples, token_counts=counts,
                        timings=timings, wall_seconds=20.0)


def test_report_html_references_files_beside_it(tmp_path):
    page = _report(tmp_path)
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text
    refs = re.findall(r'src="([^"]+)"', text)
    assert len([r for r in refs if r.endswith(".png")]) == 3      # 2 loss figures + 1 spectrogram
    assert len([r for r in refs if r.endswith(".wav")]) == 8      # 4 players, src + <source>
    for ref in refs:
        assert (tmp_path / ref.replace("&#x27;", "'")).is_file(), ref
    assert "train the codec" in text and "eval/q4/mel_distance" in text


# Appended to a copy of the report: after load, waits (in real time) for every <audio> to get its
# metadata or fail, then leaves what it found in window.__check for the DevTools client to read.
_CHECK_JS = """
<script>
window.addEventListener('load', () => {
  const audios = [...document.querySelectorAll('audio')];
  audios.forEach(a => a.load());
  const t0 = Date.now();
  const report = () => {
    const pending = audios.filter(a => a.readyState < 1 && !a.error);
    if (pending.length && Date.now() - t0 < 45000) { setTimeout(report, 100); return; }
    window.__check = JSON.stringify({
      title: document.title,
      h1: (document.querySelector('h1') || {}).textContent,
      images: [...document.images].map(i => ({src: i.getAttribute('src'), complete: i.complete,
                                               width: i.naturalWidth})),
      audio: audios.map(a => ({src: a.currentSrc, ready: a.readyState, error: a.error && a.error.code,
                               duration: a.duration, canPlay: a.canPlayType('audio/wav')})),
    });
  };
  report();
});
</script>
"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


class _DevToolsPipe:
    """Chromium's DevTools protocol over --remote-debugging-pipe: the browser reads commands on
    its fd 3 and writes replies on fd 4, each a JSON object ended by a NUL byte.

    Why not --dump-dom with --virtual-time-budget: virtual time runs ahead while the media thread
    parses a file, so on a loaded machine the page's wait for audio metadata ran out after a few
    real milliseconds (CI saw readyState 0). Polling over the pipe waits in real time."""

    def __init__(self, browser: str, profile: Path):
        self._log = tempfile.TemporaryFile()
        to_browser_read, self._write = os.pipe()
        self._read, from_browser_write = os.pipe()
        # bash moves the browser's ends onto its fds 3 and 4. They are first copied above 9 so
        # that neither can already be 3 or 4 (the redirections would clobber one another).
        ends = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
                     for fd in (to_browser_read, from_browser_write))
        for fd in (to_browser_read, from_browser_write):
            os.close(fd)
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{ends[0]} 4>&{ends[1]} {ends[0]}<&- {ends[1]}>&-', "bash",
             browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--mute-audio", "--allow-file-access-from-files",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            # stderr to a file: a pipe nobody reads could fill and stall the browser.
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
            pass_fds=ends)
        for fd in ends:
            os.close(fd)
        self._buffer, self._next_id = b"", 0

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:                                  # events arrive in between: skip them
            while b"\0" not in self._buffer:
                chunk = os.read(self._read, 65536)
                if not chunk:
                    self._log.seek(0)
                    raise RuntimeError(f"chromium closed the pipe: {self._log.read()[-2000:]}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def close(self):
        os.close(self._write)
        os.close(self._read)
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._log.close()


def _run_check(browser: str, page: Path, profile: Path, timeout: float = 60.0) -> dict:
    tools = _DevToolsPipe(browser, profile)
    try:
        target = tools.call("Target.createTarget", url=page.as_uri())["targetId"]
        session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = tools.call("Runtime.evaluate", session, expression="window.__check || null",
                                returnByValue=True)["result"]
            if result.get("value"):
                return json.loads(result["value"])
            time.sleep(0.2)
        raise AssertionError(f"the page did not finish its check within {timeout:.0f} s")
    finally:
        tools.close()


@pytest.mark.timeout(90)
def test_report_renders_in_headless_chromium(tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed: `make test` installs it (Makefile APT_PACKAGES); "
                    "or `apt-get install chromium`")
    page = _report(tmp_path)
    probe = page.with_name("report_check.html")
    probe.write_text(page.read_text().replace("</body>", _CHECK_JS + "</body>"))
    check = _run_check(browser, probe, tmp_path / "profile")
    assert check["title"] == "audiolm-jax demo report" and "small-world demo" in check["h1"]
    assert len(check["images"]) == 3
    for image in check["images"]:
        assert image["complete"] and image["width"] > 0, image
    assert len(check["audio"]) == 4
    for audio in check["audio"]:
        assert audio["canPlay"] in ("maybe", "probably"), audio
        assert audio["error"] is None and audio["ready"] >= 1, audio
        assert audio["duration"] > 0.9, audio


def test_pick_prompts_one_per_voice_then_others(tmp_path):
    from audiolm_jax.demo.pipeline import pick_prompts

    def utterance(voice, book, index, seconds):
        path = tmp_path / voice / book / f"{voice}-{book}-{index:04d}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.zeros(int(seconds * RATE), np.float32), RATE)
        return path

    a0, a1 = utterance("a", "luke", 0, 7.0), utterance("a", "luke", 1, 7.0)
    a_mark = utterance("a", "mark", 0, 6.5)
    utterance("b", "john", 0, 2.0)                     # too short to compare a continuation with
    b1 = utterance("b", "john", 1, 6.0)
    assert pick_prompts(tmp_path, count=3) == [a0, b1, a_mark]
    assert pick_prompts(tmp_path, count=4) == [a0, b1, a_mark, a1]
    with pytest.raises(RuntimeError, match="no utterance"):
        pick_prompts(tmp_path, count=2, min_seconds=60.0)
    # A packed (Opus) world: the same choice, hidden temp files ignored.
    for path in (a0, a1, a_mark, b1):
        sf.write(path.with_suffix(".opus"), sf.read(path)[0], RATE, format="OGG", subtype="OPUS")
        path.unlink()
    (tmp_path / "a" / "luke" / ".a-luke-0000.opus.tmp.opus").write_bytes(b"")
    assert pick_prompts(tmp_path, count=3) == [p.with_suffix(".opus") for p in (a0, b1, a_mark)]
