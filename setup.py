"""audiolm-jax: AudioLM (Borsos et al. 2022) as a JAX/Flax training framework.

Pinned to one set that installs together on Python 3.11 (see README, "Why Python 3.11").
The core (`audiolm_jax`) needs no TensorFlow; the `data` extra adds the TFDS/SeqIO/Beam layer
in `tasks/`.
"""
from setuptools import find_packages, setup

CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "gin-config==0.5.0",
    "ml-collections==1.1.0",
    "numpy>=2.0,<3",
    "scipy>=1.13",
    "librosa==0.11.0",
    "soundfile==0.14.0",
    "soxr==1.1.0",
    "tqdm==4.70.1",
    "tensorboardX==2.6.5",
    # protobuf 6 satisfies TF 2.21, tensorflow-text, seqio, Beam and tensorboardX at once.
    "protobuf>=6.33,<6.34",
    # The small world: music21 ships the scores; pocketsphinx ships the CMU lexicon and the ASR.
    "music21==10.5.1",
    "pocketsphinx==5.1.1",
]

EXTRAS = {
    "data": [
        "tensorflow==2.21.0",
        "tensorflow-text==2.21.1",
        "seqio==0.0.20",
        "tensorflow-datasets==4.9.10",
        "apache-beam==2.77.0",
        # 0.2.3 pulls a protobuf that breaks Beam.
        "sentencepiece==0.2.1",
        # TFDS 4.9.10 imports it for builders defined in a package but declares it only for
        # Python < 3.9 (tensorflow/datasets#11212).
        "importlib_resources>=6.4",
    ],
    "eval": [
        "pesq==0.0.4",
        "pystoi==0.4.1",
        "visqol-python==3.8.0",
        "jiwer==4.0.0",
        # The speaker encoder of `eval similarity` (weights in the wheel). Its torch: 2.13.0
        # (the CPU build lies on the project machines' disk; elsewhere take the CPU index).
        "resemblyzer==0.1.4",
        "torch==2.13.0",
        # resemblyzer's VAD (webrtcvad) imports pkg_resources, which setuptools 81 removed.
        "setuptools<81",
    ],
    "dev": [
        "pytest==9.2.0",
        "pytest-timeout>=2.3",
        "pytest-xdist==3.8.0",
        "hypothesis>=6.100",
        # The reference k-means of tests/test_semantic_kmeans.py (librosa installs it too).
        "scikit-learn==1.9.1",
    ],
}
EXTRAS["all"] = sorted({r for reqs in EXTRAS.values() for r in reqs})
# Not in `all` (~700 MB installed): ahead-of-time compilation for TPU topologies on any machine
# (`audiolm-jax compile ... topology=`, benchmarks/scaling.py --tpu-aot). The libtpu that
# jax[tpu]==0.10.2 pins; with no TPU attached, JAX keeps using the CPU/GPU backends.
EXTRAS["tpu-aot"] = ["libtpu==0.0.42.*"]

setup(
    name="audiolm-jax",
    version="0.1.0",
    description="AudioLM in JAX/Flax: SoundStream, w2v-BERT, three stage LMs, T5X-style trainers",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["audiolm_jax", "audiolm_jax.*", "tasks", "tasks.*"]),
    include_package_data=True,
    package_data={"audiolm_jax": ["../gin/**/*.gin"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["audiolm-jax=audiolm_jax.cli:main"]},
)
