#!/bin/bash
# shellcheck disable=SC2086  # option lists ($CODEC, $STAGE, ...) are split into words on purpose
# The whole small-world speech pipeline on one machine, stage by stage, time-boxed:
# codec + w2v-BERT training -> k-means -> codec export -> token caches (the speaker classifier
# trains from here on) -> three stage LMs and the acoustic-only baseline (in parallel, one time
# box, which ends the classifier's too) -> continuations +
# ABX -> the evaluation chain on generated audio (benchmarks/eval_audio.py: AudioLM and
# acoustic-only continuations of held-out-voice prompts, reconstructions, acoustic generations;
# then `audiolm-jax eval speaker|wer|pairs|detector|ablation`, JSON under $WORK/results) ->
# stage-LM and generation benchmarks (BENCH=1). Steps whose tools the machine lacks (pocketsphinx for WER,
# flite/festival to synthesize the pairs) are skipped with the reason in the log. MODE=cpu is a
# dry run of the plumbing (2 steps each, tiny batches) for a 2-core machine. Run from the
# repository root (or a copy):
#   MODE=gpu WORK=/tmp/p CORPUS=outputs/demo/world/speech bash benchmarks/small_world_pipeline.sh
# Each step writes under $WORK (token caches under outputs/tokens/speech); logs in $WORK/logs.
# On a borrowed machine whose checkout is re-copied at every call, start it with
# benchmarks/device_chain.sh (private copies of the scripts and inputs). RESUME=1 keeps a trained
# codec export and semantic tokenizer already under $WORK and starts at the token caches.
# The generated audio ends in $WORK/eval_audio_flac.tar (collect_run.sh hands it back); where
# pocketsphinx exists (not on Python 3.12), unpack it into D and run the ASR rows there:
#   audiolm-jax eval wer --corpus C --reconstruction D/eval_audio/reconstruction \
#     --acoustic-generation D/eval_audio/acoustic_generation --limit 40
#   audiolm-jax eval ablation --corpus C --continuation D/eval_audio/continuation \
#     --acoustic-only D/eval_audio/acoustic_only --out results/eval_ablation_babble.json
# and the resemblyzer check of Table III (webrtcvad has no wheel to carry to a GPU image):
#   audiolm-jax eval similarity --corpus C --reconstruction D/eval_audio/reconstruction \
#     --acoustic-generation D/eval_audio/acoustic_generation \
#     --continuation D/eval_audio/continuation --acoustic-only D/eval_audio/acoustic_only
MODE=${MODE:-gpu}; W=${WORK:-/tmp/p}; C=${CORPUS:-outputs/demo/world/speech}
# shellcheck source-path=SCRIPTDIR source=chain_lib.sh
. "$(dirname "$0")/chain_lib.sh"
chain_begin; chain_options; mkdir -p $W/gen
if [ $MODE = gpu ]; then
  # Time boxes in seconds; CODEC_T, W2V_T and STAGE_T from the environment shorten them when the
  # device budget is short (the codec and w2v-BERT boxes run side by side).
  CODEC_T=${CODEC_T:-500}; STAGE_T=${STAGE_T:-150}; W2V_T=${W2V_T:-330}; STAGE=""
  SPK_T=$((STAGE_T + 600))   # an upper bound: the classifier stops with the stages
  # The k-means layer: lowest across-speaker ABX on held-out books (ABX is reported on held-out
  # voices); runs while the codec still trains.
  FIT="--select-layer-on heldout_books --select-layer-items 3000"; CONT="--seconds 7 --samples 2"
  SPK=""; DET="--steps 300"; WER="--limit 40"; PAIRS_N="--pairs-lexical 25 --pairs-syntactic 5"
  FINE_CONTEXT="--limit 64"   # held-out utterances scored at each fine-stage chunk length
  # 32 prompts in one batch cost about what 8 did; the detector holds out half of them (it had
  # 2 + 2 files in session 8). Acoustic generations run stages 2-3 one utterance at a time: 8,
  # 3 samples each as in the paper's Table II (the samples share the utterance's batch).
  EVAL_AUDIO="--prompts 32 --acoustic-generation-prompts 8 --acoustic-generation-samples 3 --prompt-seconds 3 --seconds 7"
  # Session 8: 2500 items (37 utterances) gave the semantic-minus-codec difference a 95% interval
  # of about +-5 points; the held-out voices hold ~12k items; features took 130 s for 2500.
  # ABX_ITEMS=0 skips ABX (issue 6's figure) when the device budget is short.
  ABX="--max-items ${ABX_ITEMS:-6000}"
  export XLA_PYTHON_CLIENT_MEM_FRACTION=0.3
else
  # The classifier first passes every utterance through the codec (~0.45 h of audio; a 400 s
  # box ended during that pass in session 22's dry run, beside the acoustic stage).
  CODEC_T=600; STAGE_T=400; SPK_T=1200; W2V_T=1200; FIT="--max-hours 0.03 --select-layer-on heldout_books --select-layer-items 2000"; CONT="--seconds 1 --samples 1 --dtype float32"
  STAGE="--gin.train.num_train_steps=2 --gin.BATCH_SIZE=2 --gin.train.eval_every=0 --gin.train.eval_data=None"
  SPK="--gin.train.num_train_steps=2 --gin.OptimizerConfig.warmup_steps=1 --gin.speaker_crop_batches.batch_size=2 --gin.train.eval_every=0 --gin.train.eval_data=None"
  DET="--steps 2"; WER="--limit 3"; PAIRS_N="--pairs-lexical 3 --pairs-syntactic 1 --limit 4"
  FINE_CONTEXT="--limit 3 --chunk-seconds 3 1"
  EVAL_AUDIO="--prompts 4 --acoustic-generation-prompts 2 --acoustic-generation-samples 2 --prompt-seconds 3 --seconds 1 --max-seconds 4.5 --dtype float32"
  ABX=""
fi
PAIRS=${PAIRS:-$W/pairs}
# XLA's kernel autotuning stays on for every step. Session 6 turned it off for the inference
# steps to save compile time; session 7 then saw the tokenize job run at ~20 h of audio per hour
# once warm (5 s per batch of 16), against 1848 h/h for paper-size models with autotuning
# (results/semantic.json): untuned convolutions cost far more than tuning them. INFER_AUTOTUNE=0
# brings the old setting back (probed first, since XLA aborts on a flag it does not know).
BASE_XLA_FLAGS=${XLA_FLAGS:-}; INFER_XLA_FLAGS=$BASE_XLA_FLAGS
if [ $MODE = gpu ] && [ "${INFER_AUTOTUNE:-1}" = 0 ] && \
    XLA_FLAGS="$BASE_XLA_FLAGS --xla_gpu_autotune_level=0" python3 -c "import jax; jax.devices()" \
    > /dev/null 2>&1; then
  INFER_XLA_FLAGS="$BASE_XLA_FLAGS --xla_gpu_autotune_level=0"
fi
log "start MODE=$MODE"
train_tokenizers experiments/codec_speech_small_world experiments/w2v_bert_small_world
export XLA_FLAGS=$INFER_XLA_FLAGS
# The train split first (it meets every length bucket; its programs compile ahead in threads),
# then the held-out splits at once: their buckets are a subset, read from the compilation cache.
# One bucket per octave: session 8's job was compile-bound (10 programs of ~26 s each for 2.8 h,
# then 1388 h/h), so fewer programs at up to 2x padding are the better trade on a small corpus.
tokenize() {
  $CLI tokenize --corpus $C --split $1 --codec $W/codec_export --semantic $W/tokenizer \
    --out outputs/tokens/speech/$1 --shards 4 --dataset small_world_speech --batch-size 16 \
    --buckets-per-octave 1 > $W/logs/tokenize_$1.log 2>&1
}
# The speaker classifier hears its crops through the codec: every row it judges comes out of the
# codec's decoder, and trained on clean audio it read the codec's artefacts (session 11: all 32
# continuations labelled one voice, 1 of 32 reconstructions right). It first resynthesizes its
# 2.8 h, which took its whole 135 s box beside the four stages (session 24: an empty log, no
# checkpoint; alone, 1661 steps in 150 s): on a GPU it starts here, beside the tokenize job, and
# trains until the stages' box ends.
train_speaker() {
  local mem=""; [ $MODE = gpu ] && mem=XLA_PYTHON_CLIENT_MEM_FRACTION=0.1
  env $mem XLA_FLAGS="$BASE_XLA_FLAGS" timeout -s TERM $SPK_T $CLI train \
    --gin_file=experiments/speaker_small_world --gin.CORPUS="'$C'" \
    --gin.train.workdir="'$W/speaker'" \
    --gin.speaker_crop_batches.resynthesize_codec="'$W/codec_export'" $SPK \
    > $W/logs/speaker.log 2>&1 &
  SPK_PID=$!
}
[ $MODE = gpu ] && train_speaker
tokenize train; log "tokenize train rc=$? ($(tail -n1 $W/logs/tokenize_train.log))"
tokenize heldout_voices & TOK_PIDS=$!; tokenize heldout_books & TOK_PIDS="$TOK_PIDS $!"
wait $TOK_PIDS; log "tokenize held-out done: $(tail -qn1 $W/logs/tokenize_heldout_*.log | tr '\n' ' ')"
export XLA_FLAGS=$BASE_XLA_FLAGS
# The three stages and the acoustic-only baseline share the GPU and one time box with the
# classifier (memory: 4 x 0.2 + 0.1). On CPU (~9 GB of RAM per acoustic stage) the baseline and
# the classifier start after the three stages.
[ $MODE = gpu ] && export XLA_PYTHON_CLIENT_MEM_FRACTION=0.2
STAGE_PIDS=""
for st in semantic coarse fine acoustic; do
  [ $MODE = cpu ] && [ $st = acoustic ] && { wait $STAGE_PIDS; log "stages done"; }
  timeout -s TERM $STAGE_T $CLI train --gin_file=experiments/stage_${st}_speech_small_world \
    --gin.train.workdir="'$W/stage_$st'" --gin.train.num_train_steps=100000 $STAGE \
    > $W/logs/stage_$st.log 2>&1 &
  STAGE_PIDS="$STAGE_PIDS $!"
done
[ $MODE = cpu ] && train_speaker   # on the CPU beside the acoustic stage, in its own box
wait $STAGE_PIDS; log "stages + acoustic-only done"
# On a GPU the classifier's box ends with the stages' (timeout forwards the TERM; it saves).
[ $MODE = gpu ] && kill -TERM $SPK_PID 2> /dev/null
wait $SPK_PID; log "speaker classifier rc=$? ($(last_step speaker))"
unset XLA_PYTHON_CLIENT_MEM_FRACTION; export XLA_PYTHON_CLIENT_PREALLOCATE=false
export XLA_FLAGS=$INFER_XLA_FLAGS
if [ "${ABX_ITEMS:-}" = 0 ]; then
  log "abx skipped: ABX_ITEMS=0"; true & ABX_PID=$!   # a finished job for `wait $ABX_PID` below
else
  python3 benchmarks/semantic.py --tokenizer $W/tokenizer --codec $W/codec_export --corpus $C \
    --split heldout_voices --skip-throughput $ABX --out $W/results/semantic.json > $W/logs/abx.log 2>&1 &
  ABX_PID=$!
fi
ev() {  # ev NAME ARGS...: audiolm-jax eval NAME ..., result in $W/results/eval_NAME.json
  local name=$1; shift
  $CLI eval $name --corpus $C --out $W/results/eval_$name.json "$@" > $W/logs/eval_$name.log 2>&1
  log "eval $name rc=$? ($(tail -n1 $W/logs/eval_$name.log))"
}
if [ -f $PAIRS/pairs.json ]; then BUILD=""
elif command -v flite > /dev/null && command -v text2wave > /dev/null; then BUILD="--build"
else BUILD=none; fi
if [ "$BUILD" = none ]; then
  log "eval pairs skipped: no $PAIRS/pairs.json and no flite/festival to synthesize them (build elsewhere: audiolm-jax eval pairs --build --pairs-dir DIR, then PAIRS=DIR)"
else
  # Needs only the semantic stage and the tokenizer: beside ABX, so the budget cannot cut it.
  ev pairs --pairs-dir $PAIRS $BUILD $PAIRS_N --semantic-run $W/stage_semantic \
    --tokenizer $W/tokenizer &
fi
# What shorter fine-stage chunks (fewer decoding steps: benchmarks/generate.py
# --fine-chunk-seconds) cost in log-likelihood of the true fine codes of held-out voices.
ev fine-context --fine-run $W/stage_fine --tokens outputs/tokens/speech/heldout_voices \
  $FINE_CONTEXT &
# The `continue` CLI (WAVs, spectrogram, tokens JSON) on one prompt; eval_audio.py below writes
# the continuations of all its prompts in one batch.
for p in $(find $C/heldout_voices \( -name "*.flac" -o -name "*.opus" \) | sort | awk -F/ '{print $(NF-2)" "$0}' | sort -k1,1 -u | cut -d' ' -f2 | head -n 1); do
  n=$(basename $p); n=${n%.*}
  $CLI continue --prompt $p --max-prompt-seconds 3 $CONT --out $W/gen/$n --semantic $W/stage_semantic \
    --coarse $W/stage_coarse --fine $W/stage_fine --codec $W/codec_export --tokenizer $W/tokenizer \
    > $W/logs/continue_$n.log 2>&1; log "continue $n rc=$?"
done
# The evaluation chain on generated audio (results/*.json small; the audio stays in $W/eval_audio).
E=$W/eval_audio
python3 benchmarks/eval_audio.py --corpus $C --out $E --json $W/results/eval_audio.json \
  --semantic $W/stage_semantic --coarse $W/stage_coarse --fine $W/stage_fine \
  --acoustic-only $W/stage_acoustic --codec $W/codec_export --tokenizer $W/tokenizer $EVAL_AUDIO \
  > $W/logs/eval_audio.log 2>&1; log "eval_audio rc=$?"
# The generated audio as FLAC in one tar (for ASR or listening on another machine), before the
# evaluations, so it comes back even if they outlast the machine.
python3 benchmarks/pack_audio.py $W/eval_audio_flac.tar $E $W/gen > $W/logs/pack_audio.log 2>&1
log "pack_audio rc=$? ($(tail -n1 $W/logs/pack_audio.log))"
mkdir -p $W/detector   # trains a classifier (the longest evaluation): beside the others
ev detector --originals $E/reconstruction --continuation $E/continuation --workdir $W/detector \
  --heldout-fraction 0.5 $DET &
wait $ABX_PID; log "abx rc=$?"
ev speaker --classifier $W/speaker --reconstruction $E/reconstruction \
  --acoustic-generation $E/acoustic_generation --continuation $E/continuation
ev ablation --classifier $W/speaker --continuation $E/continuation --acoustic-only $E/acoustic_only
if python3 -c "import pocketsphinx" 2> /dev/null; then
  ev wer --reconstruction $E/reconstruction --acoustic-generation $E/acoustic_generation $WER
else
  log "eval wer skipped: pocketsphinx is not importable here (pip install pocketsphinx)"
fi
wait; log "evaluations done"
unset XLA_PYTHON_CLIENT_PREALLOCATE
export XLA_FLAGS=$BASE_XLA_FLAGS   # speed figures with XLA's autotuning, as users run
if [ $MODE = gpu ] && [ "${BENCH:-0}" = 1 ]; then  # paper-size speed (measured separately too)
  python3 benchmarks/train_stage.py --out $W/results/train_stage.json > $W/logs/train_stage.log 2>&1; log "train_stage rc=$?"
  python3 benchmarks/generate.py --out $W/results/generate.json > $W/logs/generate.log 2>&1; log "generate rc=$?"
fi
log "DONE"; touch $W/DONE
