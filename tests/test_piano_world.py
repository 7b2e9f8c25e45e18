"""The piano small world: layout, MIDI beside the audio, held-out pieces, determinism, resume, skips."""
import dataclasses
import json
import math
import os
import shutil

import pytest

from audiolm_jax.audio import audio_info
from audiolm_jax.data import piano_world
from audiolm_jax.data.piano_world import (
    PERFORMERS,
    Piece,
    PieceTask,
    Prepared,
    build_piano_world,
    list_pieces,
    piece_split,
    prepare_piece,
)
from audiolm_jax.data.world_common import Skipped, TaskFailed, parallel_map

tools_missing = pytest.mark.skipif(
    shutil.which("fluidsynth") is None or not piano_world.available_performers(),
    reason="needs fluidsynth and a GM soundfont (make tools)")


def _seed_with_both_splits():
    """A seed whose first two pieces land in different splits (a hash property, no audio)."""
    for seed in range(200):
        first = list_pieces(seed, composers=("bach",))[:2]
        if {piece_split(p.piece_id, seed) for p in first} == {"train", "heldout_pieces"}:
            return seed, first
    raise AssertionError("no seed in 0..199 puts one of the first two pieces in each split")


def _files(root, ext):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(ext))


def _tree_bytes(root):
    out = {}
    for ext in (".flac", ".mid", ".json"):
        for path in _files(root, ext):
            if os.path.basename(path) != "summary.json":
                with open(path, "rb") as fh:
                    out[os.path.relpath(path, root)] = fh.read()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    seed, first = _seed_with_both_splits()
    # Just past the first piece's length, so exactly the first two pieces are rendered.
    performer = piano_world.choose_performer(first[0].piece_id, seed, piano_world.available_performers())
    task = PieceTask("/unused", seed, first[0], performer, "train")
    hours = (prepare_piece(task).midi_duration + piano_world.TAIL_S + 1.0) / 3600.0
    root = str(tmp_path_factory.mktemp("piano") / "world")
    summary = build_piano_world(root, hours=hours, seed=seed, workers=2, progress=False, composers=("bach",))
    return root, summary, seed, hours, first


@pytest.mark.needs_tools
@tools_missing
def test_layout_audio_midi_and_heldout_pieces(world):
    root, summary, seed, _, first = world
    flacs = _files(root, ".flac")
    assert summary["pieces"]["total"] == len(flacs) == 2
    assert summary["pieces"]["train"] == summary["pieces"]["heldout_pieces"] == 1
    splits = {}
    for path in flacs:
        split, performer, piece, name = os.path.relpath(path, root).split(os.sep)
        assert name == f"{performer}-{piece}.flac"
        info = audio_info(path)
        assert (info.sample_rate, info.channels, info.format) == (16000, 1, "FLAC")
        with open(path[:-5] + ".json", encoding="utf-8") as fh:
            meta = json.load(fh)
        assert (meta["piece"], meta["performer"], meta["composer"]) == (piece, performer, "bach")
        assert meta["duration"] == pytest.approx(info.frames / 16000)
        # The audio is the MIDI's length plus the release tail it was rendered with.
        assert meta["midi_duration"] + piano_world.TAIL_S - 0.5 <= meta["duration"] <= meta["midi_duration"] + 6
        assert meta["soundfont"] in {p.soundfont for p in PERFORMERS} and meta["program"] == 0
        with open(path[:-5] + ".mid", "rb") as fh:
            assert fh.read(4) == b"MThd"
        splits[piece] = split
    assert splits == {p.piece_id: piece_split(p.piece_id, seed) for p in first}
    assert summary["heldout_pieces"] == [p for p, s in splits.items() if s == "heldout_pieces"]
    with open(os.path.join(root, "summary.json"), encoding="utf-8") as fh:
        assert json.load(fh) == summary


@pytest.mark.needs_tools
@tools_missing
def test_same_seed_same_bytes_any_workers_and_resume_rebuilds_only_the_missing(world, tmp_path):
    root, summary, seed, hours, _ = world
    again = str(tmp_path / "again")
    summary1 = build_piano_world(again, hours=hours, seed=seed, workers=1, progress=False, composers=("bach",))
    assert _tree_bytes(again) == _tree_bytes(root)
    assert {k: v for k, v in summary1.items() if k != "build"} == \
        {k: v for k, v in summary.items() if k != "build"}

    victim = _files(again, ".flac")[0]
    keeper = _files(again, ".flac")[1]
    mtime = os.stat(keeper).st_mtime_ns
    os.remove(victim)
    resumed = build_piano_world(again, hours=hours, seed=seed, workers=1, progress=False, composers=("bach",))
    assert (resumed["build"]["built"], resumed["build"]["reused"]) == (1, 1)
    assert os.stat(keeper).st_mtime_ns == mtime
    assert _tree_bytes(again) == _tree_bytes(root)


def test_performance_midi_scales_tempo_velocity_and_forces_piano():
    seed = 0
    piece = list_pieces(seed, composers=("bach",))[0]
    fast, slow = (dataclasses.replace(PERFORMERS[0], tempo_scale=t, velocity_scale=v)
                  for t, v in ((1.25, 1.2), (1.0, 0.6)))
    a = prepare_piece(PieceTask("/unused", seed, piece, fast, "train"))
    b = prepare_piece(PieceTask("/unused", seed, piece, slow, "train"))
    assert isinstance(a, Prepared) and isinstance(b, Prepared) and a.notes == b.notes > 0
    assert a.midi_duration == pytest.approx(b.midi_duration / 1.25, rel=0.01)

    from music21 import midi
    velocities, programs = {}, set()
    for name, prepared in (("fast", a), ("slow", b)):
        mf = midi.MidiFile()
        mf.readstr(prepared.midi)
        events = [e for t in mf.tracks for e in t.events if isinstance(e, midi.MidiEvent)]
        velocities[name] = [e.velocity for e in events
                            if e.type == midi.ChannelVoiceMessages.NOTE_ON and e.velocity]
        programs |= {e.data for e in events if e.type == midi.ChannelVoiceMessages.PROGRAM_CHANGE}
    assert programs <= {0}
    assert sum(velocities["fast"]) > 1.5 * sum(velocities["slow"])


@pytest.mark.parametrize("name, content, kind", [
    ("broken.xml", "<score-partwise><part id=", "parse_failed"),
    ("empty.krn", "**kern\n*M4/4\nthis is not a kern token\n*-\n", "no_notes"),
])
def test_bad_score_is_skipped_with_reason(tmp_path, name, content, kind):
    bad = tmp_path / name
    bad.write_text(content)
    task = PieceTask(str(tmp_path), 0, Piece("test_bad", "test", f"test/{name}", str(bad)),
                     PERFORMERS[0], "train")
    result = prepare_piece(task)
    assert isinstance(result, Skipped) and result.item == f"test/{name}"
    assert result.kind == kind and result.reason


def test_piece_order_split_and_performer_are_functions_of_the_seed():
    a, b = list_pieces(0), list_pieces(0)
    assert a == b and [p.composer for p in a[:300]] == ["bach"] * 300  # Bach first
    assert [p.piece_id for p in list_pieces(1)[:20]] != [p.piece_id for p in a[:20]]
    assert len({p.piece_id for p in a}) == len(a) and all("-" not in p.piece_id for p in a)
    heldout = sum(piece_split(p.piece_id, 0) == "heldout_pieces" for p in a) / len(a)
    assert 0.07 < heldout < 0.13
    chosen = {piano_world.choose_performer(p.piece_id, 0, PERFORMERS).name for p in a[:200]}
    assert chosen == {p.name for p in PERFORMERS}
    assert len({p.soundfont for p in PERFORMERS}) >= 2



@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_map_keeps_order_reports_failures_and_stops_early(workers):
    out = parallel_map(math.sqrt, [4.0, 9.0, -1.0, 16.0], workers=workers, progress=False)
    assert out[:2] == [2.0, 3.0] and out[3] == 4.0
    assert isinstance(out[2], TaskFailed) and "ValueError" in out[2].error
    many = [float(i) for i in range(200)]
    got = parallel_map(math.sqrt, many, workers=workers, progress=False, until=lambda done: len(done) >= 10)
    assert 10 <= len(got) < 10 + 4 * workers and got == [math.sqrt(x) for x in many[:len(got)]]
