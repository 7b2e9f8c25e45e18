#!/bin/bash
# shellcheck disable=SC2086  # option lists ($CODEC, $STAGE, ...) are split into words on purpose
# The piano experiment (AudioLM sec. IV-I) on one machine, stage by stage, time-boxed, as
# benchmarks/small_world_pipeline.sh does for speech (read it first): piano codec (Q=3 x N=2^14)
# + w2v-BERT on piano -> k-means (the config's layer: piano has no phone timings to choose one by
# ABX) -> codec export -> token caches of train and heldout_pieces -> the semantic and coarse
# stages (the coarse stage predicts all 3 levels: two stages, no fine stage) and the acoustic-only
# baseline in one time box -> continuations of the held-out pieces' openings by AudioLM and by the
# acoustic-only model (benchmarks/eval_audio.py --layout piano: same prompts, same file names) ->
# the audio packed as FLAC -> `audiolm-jax eval piano` (AudioLM's win rate over the baseline on
# prompt-coherence metrics, $WORK/results/eval_piano.json). MODE=cpu is a dry run of the plumbing
# (2 steps each, tiny batches) for a 2-core machine. Run from the repository root (or a copy):
#   MODE=gpu WORK=/tmp/pp CORPUS=outputs/demo/world/piano bash benchmarks/piano_pipeline.sh
# CORPUS: a piano tree (`audiolm-jax corpus piano`; splits train and heldout_pieces). Token
# caches go to outputs/tokens/piano/<split> (what experiments/stage_*_piano_small_world.gin
# read); logs in $WORK/logs. On a borrowed machine start it with benchmarks/device_chain.sh:
#   PIPELINE=benchmarks/piano_pipeline.sh WORK=/tmp/pp bash benchmarks/device_chain.sh \
#     .carry/snap .carry/world_opus/piano none .whl $OUT 540
# RESUME=1 keeps a trained codec export and semantic tokenizer already under $WORK and starts at
# the token caches.
MODE=${MODE:-gpu}; W=${WORK:-/tmp/pp}; C=${CORPUS:-outputs/demo/world/piano}
# shellcheck source-path=SCRIPTDIR source=chain_lib.sh
. "$(dirname "$0")/chain_lib.sh"
chain_begin; chain_options
if [ $MODE = gpu ]; then
  # One H200: the codec's box is the chain's longest step (w2v-BERT and k-means run beside it).
  # The boxes can be shortened from the environment (e.g. when the GPU is shared with another run).
  CODEC_T=${CODEC_T:-420}; W2V_T=${W2V_T:-300}; STAGE_T=${STAGE_T:-180}; STAGE=""; FIT="--layout piano"; TOK="--batch-size 8 --buckets-per-octave 1"
  # 0.5 h of piano holds ~3 held-out pieces: 8 continuations of each opening per system (each
  # continuation pairs with the baseline's of the same name in `eval piano`).
  EVAL_AUDIO="--prompts 8 --samples 8 --prompt-seconds 3 --seconds 7"
  export XLA_PYTHON_CLIENT_MEM_FRACTION=0.3
else
  CODEC_T=600; W2V_T=1200; STAGE_T=600; FIT="--layout piano --max-hours 0.03"; TOK="--batch-size 2"
  W2V="$W2V --gin.eval_crops/audio_crop_batches.batch_size=2 --gin.train.eval_batches=1"
  # Short crops: the piano vocabulary (49667 ids) makes the logits 4x the speech stages'.
  STAGE="--gin.train.num_train_steps=2 --gin.BATCH_SIZE=2 --gin.CROP_SECONDS=4.0 --gin.train.eval_every=0 --gin.train.eval_data=None"
  EVAL_AUDIO="--prompts 4 --samples 2 --prompt-seconds 3 --seconds 1 --max-seconds 4.5 --dtype float32"
fi
log "start MODE=$MODE corpus $C"
# w2v-BERT on piano (experiments/w2v_bert_piano_small_world: the speech recipe, piano layout,
# evaluated on heldout_pieces) and k-means at its layer, while the codec trains.
train_tokenizers experiments/codec_piano_small_world experiments/w2v_bert_piano_small_world
# Token caches: the train split first (its length buckets compile), then heldout_pieces (a few
# pieces: one shard). Nothing else holds the GPU now, so the default memory fraction.
unset XLA_PYTHON_CLIENT_MEM_FRACTION
tokenize() {  # tokenize SPLIT SHARDS
  $CLI tokenize --corpus $C --layout piano --split $1 --codec $W/codec_export \
    --semantic $W/tokenizer --out outputs/tokens/piano/$1 --shards $2 \
    --dataset small_world_piano $TOK > $W/logs/tokenize_$1.log 2>&1
}
tokenize train 4; log "tokenize train rc=$? ($(tail -n1 $W/logs/tokenize_train.log))"
tokenize heldout_pieces 1
log "tokenize heldout_pieces rc=$? ($(tail -n1 $W/logs/tokenize_heldout_pieces.log))"
# The cache's vocabulary (3 + K + Q * N) must fit the stages' VOCAB_SIZE (49667 for K=512 and the
# 3 x 16384 codec): pass the cache's own size, which stage_batches checks.
VOCAB=$(python3 -c "from audiolm_jax.tokens import TokenCache; print(TokenCache('outputs/tokens/piano/train').vocabulary().size)" 2> $W/logs/vocab.log)
log "vocabulary size ${VOCAB:-unknown} (stage gin default 49667)"
# The two stages and the acoustic-only baseline share the GPU and one time box (memory: 3 x 0.3;
# the 49667-id logits dominate). On CPU the baseline starts after the two stages.
[ $MODE = gpu ] && export XLA_PYTHON_CLIENT_MEM_FRACTION=0.3
declare -A STAGE_PID
stage_done() { wait ${STAGE_PID[$1]}; log "stage $1 rc=$? ($(last_step stage_$1))"; }
for st in semantic coarse acoustic; do
  [ $MODE = cpu ] && [ $st = acoustic ] && { stage_done semantic; stage_done coarse; }
  timeout -s TERM $STAGE_T $CLI train --gin_file=experiments/stage_${st}_piano_small_world \
    --gin.train.workdir="'$W/stage_$st'" --gin.train.num_train_steps=100000 \
    ${VOCAB:+--gin.VOCAB_SIZE=$VOCAB} $STAGE > $W/logs/stage_$st.log 2>&1 &
  STAGE_PID[$st]=$!
done
[ $MODE = gpu ] && { stage_done semantic; stage_done coarse; }
stage_done acoustic
unset XLA_PYTHON_CLIENT_MEM_FRACTION; export XLA_PYTHON_CLIENT_PREALLOCATE=false
# Continuations of the held-out pieces' openings: AudioLM (semantic + coarse over all 3 levels,
# no fine run) and the acoustic-only baseline, same prompts and file names; reconstructions too.
E=$W/eval_audio
python3 benchmarks/eval_audio.py --layout piano --corpus $C --out $E \
  --json $W/results/eval_audio.json --semantic $W/stage_semantic --coarse $W/stage_coarse \
  --acoustic-only $W/stage_acoustic --codec $W/codec_export --tokenizer $W/tokenizer \
  --no-acoustic-generation $EVAL_AUDIO > $W/logs/eval_audio.log 2>&1; log "eval_audio rc=$?"
# The generated audio as FLAC in one tar, before the evaluation (collect_run.sh hands it back).
python3 benchmarks/pack_audio.py $W/eval_audio_flac.tar $E > $W/logs/pack_audio.log 2>&1
log "pack_audio rc=$? ($(tail -n1 $W/logs/pack_audio.log))"
$CLI eval piano --corpus $C --audiolm $E/continuation --acoustic-only $E/acoustic_only \
  --out $W/results/eval_piano.json > $W/logs/eval_piano.log 2>&1
log "eval piano rc=$? ($(tail -n1 $W/logs/eval_piano.log))"
unset XLA_PYTHON_CLIENT_PREALLOCATE
log "DONE"; touch $W/DONE
