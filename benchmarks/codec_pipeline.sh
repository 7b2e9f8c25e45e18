#!/bin/bash
# shellcheck disable=SC2086  # option lists ($CODEC, $N) are split into words on purpose
# The speech codec alone on one machine (issue 5): trained in a time box with the whole GPU (the
# speech chain shares it with w2v-BERT, and its codec never reached the discriminators), then its
# reconstructions of held-out voices at 1.5, 2, 3 and 6 kbps written as FLAC for scoring on a
# machine with ViSQOL / PESQ (score_reconstructions.py). Start it on a borrowed GPU with
#   PIPELINE=benchmarks/codec_pipeline.sh WORK=/tmp/cp bash benchmarks/device_chain.sh \
#     .carry/snap .carry/world_opus/speech none .whl $OUT 570
# CODEC_T (box, s), GAN_START (the discriminators' first step) and CODEC (trainer options, e.g.
# --gin.SoundStreamConfig.conv_policy="'auto'") from the environment. Back here:
#   cat eval_audio_flac.tar.part* > r.tar && tar -xf r.tar -C D
#   python benchmarks/score_reconstructions.py --corpus C --reconstruction D/reconstructions/codec_6kbps --kbps 6 --out X
# MODE=cpu is a dry run of the plumbing (2 steps, tiny batches).
MODE=${MODE:-gpu}; W=${WORK:-/tmp/cp}; C=${CORPUS:-outputs/demo/world/speech}
# shellcheck source-path=SCRIPTDIR source=chain_lib.sh
. "$(dirname "$0")/chain_lib.sh"
chain_begin; chain_options
if [ $MODE = gpu ]; then CODEC_T=${CODEC_T:-420}; N="--num-utterances 40"
else CODEC_T=${CODEC_T:-600}; N="--num-utterances 2"; fi
log "start MODE=$MODE CODEC_T=$CODEC_T GAN_START=${GAN_START:-1500} CODEC=$CODEC"
start_codec experiments/codec_speech_small_world
wait $CODEC_PID; log "codec rc=$? ($(last_step codec))"
python3 benchmarks/codec_quality.py --corpus $C --split heldout_voices \
  --checkpoint $W/codec/checkpoints --gin_file models/codec_paper_speech $N \
  --reconstructions-dir $W/reconstructions > $W/logs/reconstruct.log 2>&1
log "reconstruct rc=$? ($(tail -n1 $W/logs/reconstruct.log))"
python3 benchmarks/pack_audio.py $W/eval_audio_flac.tar $W/reconstructions > $W/logs/pack_audio.log 2>&1
log "pack_audio rc=$? ($(tail -n1 $W/logs/pack_audio.log))"
log "DONE"; touch $W/DONE
