# shellcheck shell=bash
# shellcheck disable=SC2086  # option lists ($CODEC, $W2V, $FIT) are split into words on purpose
# The steps the small-world chains share, sourced by benchmarks/small_world_pipeline.sh (speech)
# and benchmarks/piano_pipeline.sh. They read the caller's W (work folder), C (corpus),
# CODEC_T / W2V_T (time boxes, seconds) and CODEC / W2V / FIT (extra options of the codec and
# w2v-BERT trainers and of fit-kmeans).

chain_begin() {  # work folders, the pid file collect_run.sh watches, the clock of `log`
  mkdir -p $W/logs $W/results
  rm -f $W/DONE; echo $$ > $W/pipeline.pid  # collect_run.sh stops waiting if this process dies
  T0=$(date +%s); CLI="python3 -m audiolm_jax.cli"
}

# shellcheck source-path=SCRIPTDIR source=autotune_cache.sh
. "$(dirname "${BASH_SOURCE[0]}")/autotune_cache.sh"

# chain_options: the trainers' options by MODE. gpu: the configs' own (later steps load what
# earlier ones compiled from a persistent cache, seeded with the autotuning results in the folder
# $AUTOTUNE when given: autotune_cache.sh); cpu: a dry run of the plumbing, 2 steps of tiny
# batches. CODEC / W2V from the environment are kept after them (e.g.
# CODEC="--gin.SoundStreamConfig.conv_policy='auto'"); callers may add their own.
chain_options() {
  if [ $MODE = gpu ]; then
    CODEC="${CODEC:-}"; W2V="${W2V:-}"
    export JAX_COMPILATION_CACHE_DIR=$W/jax_cache
    autotune_begin "${AUTOTUNE:-}"
  else
    CODEC="--gin.train.num_train_steps=2 --gin.audio_crop_batches.batch_size=2 --gin.audio_crop_batches.crop_seconds=0.5 ${CODEC:-}"
    W2V="--gin.train.num_train_steps=2 --gin.OptimizerConfig.warmup_steps=1 --gin.train_crops/audio_crop_batches.batch_size=2 --gin.train_crops/audio_crop_batches.crop_seconds=1.0 ${W2V:-}"
  fi
}

log() { echo "[$(date +%T) +$(( $(date +%s) - T0 ))s] $*" | tee -a $W/logs/pipeline.log; }

last_step() { grep -oE 'step [0-9]+' $W/logs/$1.log | tail -n1; }  # a trainer's last step

# start_codec CODEC_GIN: the codec trainer in the background ($CODEC_PID), time-boxed by $CODEC_T;
# the discriminators join at step $GAN_START (default 1500).
start_codec() {
  timeout -s TERM $CODEC_T $CLI train --gin_file=$1 --gin.CORPUS="'$C'" \
    --gin.train.workdir="'$W/codec'" --gin.train.eval_data=None --gin.train.eval_every=0 \
    --gin.train.num_train_steps=100000 \
    --gin.CodecObjective.discriminator_start_step=${GAN_START:-1500} \
    $CODEC > $W/logs/codec.log 2>&1 &
  CODEC_PID=$!
}

# train_tokenizers CODEC_GIN W2V_GIN: the codec trains in the background while w2v-BERT trains
# and k-means is fitted on its MLM layer; then the codec generator is exported (bf16). Both
# trainers are time-boxed: SIGTERM makes them save at the next step boundary
# (training/preemption.py). RESUME=1 keeps a codec export and tokenizer already under $W.
train_tokenizers() {
  if [ "${RESUME:-0}" = 1 ] && [ -d $W/codec_export ] && [ -d $W/tokenizer ]; then
    log "resume: keeping $W/codec_export and $W/tokenizer"; return 0
  fi
  start_codec $1
  timeout -s TERM $W2V_T $CLI train --gin_file=$2 --gin.audio_crop_batches.root="'$C'" \
    --gin.train.workdir="'$W/w2v'" $W2V > $W/logs/w2v.log 2>&1
  log "w2v rc=$? ($(last_step w2v))"
  $CLI semantic fit-kmeans --checkpoint $W/w2v --corpus $C --out $W/tokenizer --gin_file=$2 \
    $FIT > $W/logs/kmeans.log 2>&1
  log "kmeans rc=$? ($(grep -m1 '^saved' $W/logs/kmeans.log))"
  wait $CODEC_PID; log "codec rc=$? ($(last_step codec))"
  $CLI export --checkpoint $W/codec/checkpoints --out $W/codec_export --prefix generator \
    --exclude embed_sum cluster_size --float-dtype bfloat16 > $W/logs/export.log 2>&1
  log "export rc=$?"
}
