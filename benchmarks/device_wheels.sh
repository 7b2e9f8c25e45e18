#!/bin/bash
# Download the wheels the GPU machine's image lacks (Python 3.12, x86-64) into DIR (default .whl),
# for device_chain.sh's WHEELS argument. The image already has jax, flax, optax, orbax, numpy,
# scipy, numba, scikit-learn, joblib, lazy-loader, msgpack, tqdm, protobuf and PyYAML; what the
# chain imports beyond those is gin, librosa (and its audio readers), soundfile, soxr,
# tensorboardX and ml-collections. About 2.5 MB.
#   bash benchmarks/device_wheels.sh [DIR]
set -eu
DIR=${1:-.whl}
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DIR" \
  gin-config==0.5.0 librosa==0.11.0 soundfile==0.14.0 soxr==1.1.0 audioread==3.1.0 \
  decorator==5.3.2 pooch==1.9.0 platformdirs==4.14.9 cffi==2.1.1 pycparser==3.12 \
  tensorboardX==2.6.5 ml-collections==1.1.0
ls "$DIR"
