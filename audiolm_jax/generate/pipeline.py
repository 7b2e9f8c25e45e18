"""AudioLM generation: stage models + codec + semantic tokenizer -> audio.

    continuation   prompt wav -> semantic ids and codes of the prompt -> stage 1 -> stage 2
                   -> stage 3 -> codec decode (the prompt's own codes are kept)
    unconditional  stage 1 from BOS -> stage 2 -> stage 3 -> decode
    acoustic       given semantic ids (of a file, say) -> stage 2 -> stage 3 -> decode
    two-stage      no fine model: the coarse stage covers all Q levels (the paper's piano setup)
    acoustic-only  the paper's baseline without semantic tokens (sec. IV-C/IV-D, IV-I): prompt
                   wav -> its coarse codes -> the acoustic-only model continues them (no stage 1)
                   -> stage 3 -> decode; `AudioLM(None, acoustic_model, ..., acoustic_only=True)`
                   or `load_audiolm(None, acoustic_run, ..., acoustic_only=True)`

Durations: stage 1 needs a number of *deduplicated* semantic tokens for the requested seconds;
it is measured on the prompt (tokens per second after deduplication) or taken from
`GenerationConfig.semantic_tokens_per_second`. Stage 2 generates exactly seconds x 50 frames,
sliding a `coarse_window_s` window; stage 1 slides a `semantic_window_s` one; stage 3 runs on
non-overlapping `fine_chunk_s` chunks of the generated frames, all in one batch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Sequence

import jax
import numpy as np

from audiolm_jax.codec.api import decode_batch, encode_batch
from audiolm_jax.generate.sampling import DecodeLoop, SamplingConfig
from audiolm_jax.generate.stages import generate_coarse, generate_fine, generate_semantic
from audiolm_jax.generate.timing import TokenRates
from audiolm_jax.lm.layouts import AudioVocabulary, dedup_consecutive
from audiolm_jax.lm.transformer import Transformer


# Each stage runs inside a profiler span of this name + the stage (`timing` keys):
# benchmarks/generate.py --profile sums the device kernels per stage from them.
STAGE_SPAN = "audiolm/"


@contextlib.contextmanager
def _stage(timing: dict, name: str):
    """Wall seconds of a stage into `timing[name]` (its results are host arrays, so its device
    work is done when it returns), inside the profiler span `STAGE_SPAN + name`."""
    start = time.perf_counter()
    with jax.profiler.TraceAnnotation(STAGE_SPAN + name):
        yield
    timing[name] = time.perf_counter() - start


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Sampling per stage (paper temperatures 0.6 / 0.8 / 0.6), window sizes (the training
    crops: 30 s, 10 s, 3 s), deduplication of semantic tokens (as the stages were trained),
    the semantic token rate when no prompt gives one, the most rows per stage-3 call, and how
    the sampling loops compile (`sampling.DecodeLoop`: shape buckets, e.g. 4 per octave so calls
    of nearby lengths share programs at up to 25% more steps; cache phases)."""
    semantic: SamplingConfig = SamplingConfig(temperature=0.6)
    coarse: SamplingConfig = SamplingConfig(temperature=0.8)
    fine: SamplingConfig = SamplingConfig(temperature=0.6)
    # None: the stage's training crop when `load_audiolm` reads one from its run, else the
    # paper's (PAPER_WINDOWS); a number always wins over the run's crop.
    semantic_window_s: float | None = None
    coarse_window_s: float | None = None
    fine_chunk_s: float | None = None
    dedup: bool = True
    # Deduplicated semantic tokens per second. None: measured on the prompt; without a prompt
    # (unconditional) `unconditional_semantic_rate`, a guess to set from your token cache.
    semantic_tokens_per_second: float | None = None
    unconditional_semantic_rate: float = 18.0
    fine_max_batch: int | None = 128
    loop: DecodeLoop = DecodeLoop()

    def __post_init__(self):
        for window in PAPER_WINDOWS:
            value = getattr(self, window)
            if value is not None and value <= 0:
                raise ValueError(f"GenerationConfig.{window}={value}: give a positive length")

    def window_seconds(self, window: str) -> float:
        """A window's length in seconds: set, or the paper's (`PAPER_WINDOWS`)."""
        value = getattr(self, window)
        return PAPER_WINDOWS[window] if value is None else float(value)


# The training crops of the paper's stages, the windows they generate in.
PAPER_WINDOWS = {"semantic_window_s": 30.0, "coarse_window_s": 10.0, "fine_chunk_s": 3.0}


@dataclasses.dataclass
class Generation:
    """What a generation call returns.

    wavs: float32 [rows, samples] at `sample_rate`; rows = prompts x samples, prompt-major.
    codes: int32 [rows, frames, Q]; semantic: per row, its (deduplicated) semantic ids.
    prompt_frames: acoustic frames taken from the prompt (0 without one); the prompt boundary
    lies at prompt_frames * samples_per_frame samples. seconds: wall time per stage.
    """
    wavs: np.ndarray
    codes: np.ndarray
    semantic: list[np.ndarray]
    prompt_frames: int
    sample_rate: int
    samples_per_frame: int
    num_samples: int
    seconds: dict[str, float]
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def prompt_samples(self) -> int:
        return self.prompt_frames * self.samples_per_frame


class AudioLM:
    """The three stage models (fine may be None), the codec and the semantic tokenizer.

    num_coarse: Q', the levels stage 2 predicts (4 for speech; Q in the two-stage mode, which
    has no fine model). The vocabulary is (K of the tokenizer, Q and N of the codec) and every
    stage model must have been trained with it.
    acoustic_only: the baseline without semantic tokens: no semantic model (pass None) and
    `coarse_model` trained on the "acoustic" stage layout; `continuation` and `unconditional`
    then skip stage 1 and the semantic tokenizer (which still fixes K, so the ids agree).
    """

    def __init__(self, semantic_model: Transformer | None, coarse_model: Transformer,
                 fine_model: Transformer | None, codec, tokenizer, *, num_coarse: int,
                 config: GenerationConfig = GenerationConfig(), acoustic_only: bool = False):
        self.vocab = AudioVocabulary(tokenizer.num_clusters, codec.num_quantizers,
                                     codec.codebook_size)
        for name, model in (("semantic", semantic_model), ("coarse", coarse_model),
                            ("fine", fine_model)):
            # A model may have more ids than the vocabulary (stage runs bind vocab_size as a
            # macro that only has to cover the cache); sampling never leaves the layout's ranges.
            if model is not None and model.config.vocab_size < self.vocab.size:
                raise ValueError(
                    f"the {name} model's vocab_size is {model.config.vocab_size}, but the codec "
                    f"(Q={codec.num_quantizers}, N={codec.codebook_size}) and the tokenizer "
                    f"(K={tokenizer.num_clusters}) make a vocabulary of {self.vocab.size}; load "
                    "the codec and tokenizer that made the stage's token cache")
        if not 1 <= num_coarse <= codec.num_quantizers:
            raise ValueError(f"num_coarse={num_coarse} must be in 1..Q={codec.num_quantizers}")
        if fine_model is None and num_coarse != codec.num_quantizers:
            raise ValueError(f"no fine model, so the coarse stage must predict all "
                             f"Q={codec.num_quantizers} levels (two-stage mode), but "
                             f"num_coarse={num_coarse}; pass the fine stage's run or a coarse "
                             "stage trained on every level")
        if (semantic_model is None) != acoustic_only:
            raise ValueError("the acoustic-only model needs no semantic model and AudioLM needs "
                             f"one; got acoustic_only={acoustic_only} with semantic model "
                             f"{'absent' if semantic_model is None else 'given'}")
        if fine_model is not None and num_coarse == codec.num_quantizers:
            raise ValueError(f"num_coarse={num_coarse} = Q leaves no levels to the fine model; "
                             "drop the fine model (two-stage mode) or lower num_coarse")
        self.semantic_model, self.coarse_model, self.fine_model = (semantic_model, coarse_model,
                                                                   fine_model)
        self.codec, self.tokenizer = codec, tokenizer
        self.num_coarse, self.config = num_coarse, config
        self.acoustic_only = acoustic_only
        self.rates = TokenRates(int(codec.sample_rate),
                                float(tokenizer.num_frames(int(codec.sample_rate))),
                                float(codec.config.frame_rate))

    # --- pieces --------------------------------------------------------------------------------

    def _dedup(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int32).reshape(-1)
        return dedup_consecutive(ids) if self.config.dedup else ids

    def tokenize(self, wavs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float [rows, samples] (multiple of 640) -> (semantic ids [rows, samples / 640],
        codes [rows, samples / 320, Q])."""
        semantic = np.asarray(self.tokenizer.tokenize(wavs), np.int32)
        codes = encode_batch(self.codec, wavs, sample_rate=self.rates.sample_rate)
        return semantic, codes

    def _semantic(self, prompts: list[np.ndarray], seconds: float, rate: float,
                  rng: jax.Array, num_samples: int, timing: dict) -> list[np.ndarray]:
        """Stage 1: `seconds` of semantic ids at `rate` (deduplicated ids per second) after
        each prompt's ids."""
        with _stage(timing, "semantic"):
            return generate_semantic(
                self.semantic_model, self.vocab, prompts, self.rates.semantic_tokens(seconds, rate),
                rng=jax.random.fold_in(rng, 1), config=self.config.semantic,
                num_samples=num_samples,
                window=self.rates.semantic_tokens(self.config.window_seconds("semantic_window_s"),
                                                  self.rates.semantic_hz),
                loop=self.config.loop)

    def _acoustic(self, semantic: list[np.ndarray] | None, known: np.ndarray, total_frames: int,
                  rng: jax.Array, num_samples: int, seconds: dict) -> np.ndarray:
        """Stages 2 and 3 after `known` [rows, F0, Q] frames -> codes [rows*S, total, Q]
        (semantic None: the acoustic-only model in place of stage 2)."""
        config = self.config
        with _stage(seconds, "coarse"):
            coarse = generate_coarse(
                self.coarse_model, self.vocab, semantic, known, total_frames, self.num_coarse,
                rng=jax.random.fold_in(rng, 2), config=config.coarse,
                window_frames=self.rates.acoustic_frames(config.window_seconds("coarse_window_s")),
                num_samples=num_samples, loop=config.loop)
        prompt_frames = known.shape[1]
        known = np.repeat(np.asarray(known, np.int32), num_samples, axis=0)
        if self.fine_model is None or prompt_frames == total_frames:
            fine_new = np.zeros((coarse.shape[0], total_frames - prompt_frames, 0), np.int32)
        else:
            with _stage(seconds, "fine"):
                fine_new = generate_fine(
                    self.fine_model, self.vocab, coarse[:, prompt_frames:], self.num_coarse,
                    rng=jax.random.fold_in(rng, 3), config=config.fine,
                    chunk_frames=self.rates.acoustic_frames(config.window_seconds("fine_chunk_s")),
                    max_batch=config.fine_max_batch, loop=config.loop)
        new = np.concatenate([coarse[:, prompt_frames:], fine_new], axis=2)
        return np.concatenate([known, new], axis=1)

    def _finish(self, codes: np.ndarray, semantic, prompt_frames: int, num_samples: int,
                seconds: dict, notes=()) -> Generation:
        with _stage(seconds, "decode"):
            wavs = decode_batch(self.codec, codes)
        return Generation(wavs, codes, list(semantic), prompt_frames, self.rates.sample_rate,
                          self.rates.samples_per_frame, num_samples, seconds, list(notes))

    def _prompt_batch(self, prompts: Sequence[np.ndarray]) -> tuple[np.ndarray, list[str]]:
        prompts = [np.asarray(p, np.float32).reshape(-1) for p in prompts]
        if not prompts:
            raise ValueError("no prompts given")
        shortest = self.rates.whole_semantic_samples(min(p.size for p in prompts))
        if shortest < self.rates.samples_per_semantic:
            raise ValueError(f"a prompt of {min(p.size for p in prompts)} samples is shorter than "
                             f"one semantic frame ({self.rates.samples_per_semantic} samples)")
        notes = []
        if any(p.size - shortest >= self.rates.samples_per_semantic for p in prompts):
            notes.append(f"prompts cut to the shortest, {shortest / self.rates.sample_rate:.2f} s, "
                         "so the batch shares one prompt duration")
        return np.stack([p[:shortest] for p in prompts]), notes

    # --- modes ---------------------------------------------------------------------------------

    def continuation(self, prompts: Sequence[np.ndarray], seconds: float, *,
                     num_samples: int = 1, seed: int = 0) -> Generation:
        """Continues each prompt (float32 [samples] mono at the codec's rate) by `seconds`."""
        if seconds <= 0:
            raise ValueError(f"seconds={seconds}: give a positive duration to generate")
        timing, rng = {}, jax.random.key(seed)
        wavs, notes = self._prompt_batch(prompts)
        if self.acoustic_only:
            return self._acoustic_only_continuation(wavs, seconds, num_samples, rng, timing, notes)
        with _stage(timing, "tokenize"):
            semantic_ids, codes = self.tokenize(wavs)
        prompt_frames = min(codes.shape[1], semantic_ids.shape[1] * self.rates.frames_per_semantic)
        codes = codes[:, :prompt_frames]
        prompt_seconds = wavs.shape[1] / self.rates.sample_rate
        semantic_prompts = [self._dedup(row) for row in semantic_ids]
        rate = self.config.semantic_tokens_per_second or float(
            np.mean([row.size for row in semantic_prompts]) / prompt_seconds)
        semantic = self._semantic(semantic_prompts, seconds, rate, rng, num_samples, timing)
        total = prompt_frames + self.rates.acoustic_frames(seconds)
        codes = self._acoustic(semantic, np.repeat(codes, num_samples, axis=0), total, rng, 1,
                               timing)
        return self._finish(codes, semantic, prompt_frames, num_samples, timing, notes)

    def _acoustic_only_continuation(self, wavs: np.ndarray, seconds: float, num_samples: int,
                                    rng: jax.Array, timing: dict, notes) -> Generation:
        """The baseline: the prompt's codes, continued by the acoustic-only model, stage 3."""
        with _stage(timing, "tokenize"):
            codes = encode_batch(self.codec, wavs, sample_rate=self.rates.sample_rate)
        # Prompts are whole semantic frames long, as in AudioLM's continuation: same boundary.
        prompt_frames = min(codes.shape[1], wavs.shape[1] // self.rates.samples_per_frame)
        codes = codes[:, :prompt_frames]
        total = prompt_frames + self.rates.acoustic_frames(seconds)
        codes = self._acoustic(None, codes, total, rng, num_samples, timing)
        empty = [np.zeros(0, np.int32)] * codes.shape[0]
        return self._finish(codes, empty, prompt_frames, num_samples, timing, notes)

    def unconditional(self, seconds: float, *, num_samples: int = 1, seed: int = 0) -> Generation:
        """`num_samples` clips of `seconds` from nothing."""
        if seconds <= 0:
            raise ValueError(f"seconds={seconds}: give a positive duration to generate")
        timing, rng = {}, jax.random.key(seed)
        if self.acoustic_only:
            known = np.zeros((1, 0, self.vocab.num_quantizers), np.int32)
            codes = self._acoustic(None, known, self.rates.acoustic_frames(seconds), rng,
                                   num_samples, timing)
            return self._finish(codes, [np.zeros(0, np.int32)] * num_samples, 0, num_samples,
                                timing)
        rate = self.config.semantic_tokens_per_second or self.config.unconditional_semantic_rate
        semantic = self._semantic([np.zeros(0, np.int32)], seconds, rate, rng, num_samples,
                                  timing)
        known = np.zeros((num_samples, 0, self.vocab.num_quantizers), np.int32)
        codes = self._acoustic(semantic, known, self.rates.acoustic_frames(seconds), rng, 1,
                               timing)
        return self._finish(codes, semantic, 0, num_samples, timing)

    def acoustic(self, semantic_ids: Sequence[np.ndarray], *, num_samples: int = 1,
                 seed: int = 0) -> Generation:
        """Acoustic generation from given semantic ids ([frames] at 25 Hz, not deduplicated):
        stages 2 and 3 make audio of the same duration (2 acoustic frames per id)."""
        timing = {}
        codes, semantic = self.acoustic_codes(semantic_ids, num_samples=num_samples, seed=seed,
                                              seconds=timing)
        return self._finish(codes, semantic, 0, num_samples, timing)

    def acoustic_codes(self, semantic_ids: Sequence[np.ndarray], *, num_samples: int = 1,
                       seed: int = 0, seconds: dict | None = None
                       ) -> tuple[np.ndarray, list[np.ndarray]]:
        """`acoustic` without the decoding: (codes int32 [rows*S, 2 * ids, Q], the deduplicated
        semantic ids per row). For callers that decode many durations in one padded batch (the
        causal decoder's output for real frames does not depend on what follows them)."""
        if self.acoustic_only:
            raise ValueError("acoustic generation from semantic tokens needs AudioLM's coarse "
                             "stage; the acoustic-only model takes no semantic tokens")
        rows = [np.asarray(s, np.int32).reshape(-1) for s in semantic_ids]
        if not rows or min(r.size for r in rows) == 0:
            raise ValueError("acoustic generation needs at least one semantic id per row")
        if len({r.size for r in rows}) > 1:
            raise ValueError("acoustic generation batches rows of one duration; got semantic "
                             f"lengths {sorted({r.size for r in rows})}: call once per length")
        total = rows[0].size * self.rates.frames_per_semantic
        known = np.zeros((len(rows), 0, self.vocab.num_quantizers), np.int32)
        codes = self._acoustic([self._dedup(r) for r in rows], known, total,
                               jax.random.key(seed), num_samples,
                               {} if seconds is None else seconds)
        return codes, [self._dedup(r) for r in rows for _ in range(num_samples)]

    def resynthesize(self, wavs: Sequence[np.ndarray], *, num_samples: int = 1,
                     seed: int = 0) -> Generation:
        """Acoustic generation from the semantic ids of audio (float32 [samples] mono at the
        codec's rate): new acoustics for the same content. One call makes one duration (the
        Generation's wavs are one array): inputs of several durations are cut to the shortest,
        as prompts are, with a note in `notes`; call once per file to keep each whole."""
        batch, notes = self._prompt_batch(wavs)
        timing = {}
        with _stage(timing, "tokenize"):
            semantic_ids = np.asarray(self.tokenizer.tokenize(batch), np.int32)
        out = self.acoustic(list(semantic_ids), num_samples=num_samples, seed=seed)
        out.seconds = {**timing, **out.seconds}
        out.notes = notes
        return out


def load_audiolm(semantic_run: str | os.PathLike | None, coarse_run: str | os.PathLike,
                 fine_run: str | os.PathLike | None, codec, tokenizer, *,
                 num_coarse: int | None = None, config: GenerationConfig | None = None,
                 dtype: str | None = None, acoustic_only: bool = False) -> AudioLM:
    """AudioLM from stage runs (trainer workdirs or exports) and a codec and tokenizer (loaded
    objects, or paths: a codec run/export for `load_codec`, a directory written by
    `SemanticTokenizer.save`).

    num_coarse: None reads `stage_batches.num_coarse` from the coarse run's gin config, else
    takes Q without a fine run (two-stage) and 4 (the paper) with one. Window sizes default to
    the runs' `stage_batches.crop_seconds` when bound. dtype: compute dtype override.
    acoustic_only: the baseline without semantic tokens: `semantic_run` None and `coarse_run`
    the run of the "acoustic" stage (experiments/stage_acoustic_*); its window is its crop.
    A run whose config names its stage (`stage_batches.stage`) must be the one it is passed as.
    """
    from audiolm_jax.codec.frozen import load_codec  # noqa: PLC0415
    from audiolm_jax.generate.loading import load_stage_model, stage_data_hints  # noqa: PLC0415
    from audiolm_jax.semantic.tokenizer import SemanticTokenizer  # noqa: PLC0415

    if isinstance(codec, (str, os.PathLike)):
        codec = load_codec(codec, compute_dtype=dtype)
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = SemanticTokenizer.load(tokenizer)
    if acoustic_only and semantic_run is not None:
        raise ValueError("the acoustic-only model runs without a semantic stage; pass no "
                         "semantic run")
    if not acoustic_only and semantic_run is None:
        raise ValueError("AudioLM needs the semantic stage's run (or ask for acoustic_only)")
    hints = {name: stage_data_hints(run) for name, run in
             (("semantic", semantic_run), ("coarse", coarse_run), ("fine", fine_run)) if run}
    expected = {"semantic": "semantic", "coarse": "acoustic" if acoustic_only else "coarse",
                "fine": "fine"}
    for name, run in (("semantic", semantic_run), ("coarse", coarse_run), ("fine", fine_run)):
        trained = hints.get(name, {}).get("stage")
        if trained is not None and trained != expected[name]:
            role = "acoustic-only" if expected[name] == "acoustic" else name
            raise ValueError(f"{run} was trained as the {trained!r} stage but is passed as the "
                             f"{role} model (stage {expected[name]!r}); pass each run in its place")
    if num_coarse is None:
        num_coarse = hints["coarse"].get("num_coarse") or (
            codec.num_quantizers if fine_run is None else 4)
    config = config or GenerationConfig()
    windows = {"semantic": "semantic_window_s", "coarse": "coarse_window_s",
               "fine": "fine_chunk_s"}
    overrides = {windows[name]: float(h["crop_seconds"]) for name, h in hints.items()
                 if h.get("crop_seconds") and getattr(config, windows[name]) is None}
    config = dataclasses.replace(config, **overrides)
    models = [None if run is None else load_stage_model(run, dtype=dtype, what=name)
              for name, run in (("semantic", semantic_run), ("coarse", coarse_run),
                                ("fine", fine_run))]
    return AudioLM(*models, codec, tokenizer, num_coarse=int(num_coarse), config=config,
                   acoustic_only=acoustic_only)
