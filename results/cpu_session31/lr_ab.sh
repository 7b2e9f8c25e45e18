#!/bin/bash
# Codec generator learning-rate A/B on the 2-core CPU (reduced codec, reconstruction only).
cd /work/main
C='--gin.SoundStreamConfig.channels=16 --gin.SoundStreamConfig.embedding_dim=64 --gin.SoundStreamConfig.num_quantizers=8 --gin.SoundStreamConfig.codebook_size=256 --gin.SoundStreamConfig.dilations=(1,3,9)'
arm() {  # NAME LR
  D=/tmp/lr/$1; rm -rf $D; mkdir -p $D
  /usr/bin/time -v .venv/bin/audiolm-jax train --gin_file=experiments/codec_tiny_cpu \
    --gin.CORPUS="'.carry/world_opus/speech'" --gin.train.workdir="'$D/run'" \
    --gin.train.eval_data=None --gin.train.eval_every=0 --gin.train.num_train_steps=300 \
    --gin.CheckpointConfig.every_steps=300 --gin.CodecObjective.discriminator_start_step=100000 \
    --gin.audio_crop_batches.crop_seconds=1.0 --gin.generator/OptimizerConfig.learning_rate=$2 \
    --gin.generator/OptimizerConfig.b1=0.5 --gin.generator/OptimizerConfig.b2=0.9 \
    --gin.CodecLossConfig.spectral_windows="(64,128,256,512,1024,2048)" $C > $D/train.log 2>&1
  echo "train $1 rc=$?" >> /tmp/lr/status
  .venv/bin/python benchmarks/codec_quality.py --corpus .carry/world_opus/speech \
    --checkpoint $D/run/checkpoints --gin_file models/codec_tiny $C --codec-kbps 3.2 --opus-kbps \
    --metrics pesq stoi mel_distance --num-utterances 20 --workers 1 --examples-dir '' \
    --out $D/score.json > $D/score.log 2>&1
  echo "score $1 rc=$?" >> /tmp/lr/status
}
mkdir -p /tmp/lr; : > /tmp/lr/status
arm lr3e-4 3e-4 & arm lr3e-3 3e-3 & wait
arm lr1e-3 1e-3
echo DONE >> /tmp/lr/status
