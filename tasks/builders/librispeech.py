"""TFDS `librispeech_tree`: a LibriSpeech tree from manual_dir.

Not named `librispeech`: TFDS ships a builder of that name (which downloads), and two builders
of one name cannot be registered in one process.
"""
from tasks.builders.audio_tree import AudioTreeBuilder


class LibrispeechTree(AudioTreeBuilder):
    """LibriSpeech layout: {split}/{speaker}/{chapter}/{speaker}-{chapter}-{utt}.flac, trans.txt."""

    LAYOUT = "librispeech"
    HAS_TEXT = True
    DESCRIPTION = ("Speech from a local LibriSpeech tree: 16 kHz float32 audio, speaker, chapter "
                   "(as `group`), transcript from {speaker}-{chapter}.trans.txt.")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Point manual_dir at the LibriSpeech folder holding the split folders "
        "(train-clean-100/, dev-clean/, ...), each {speaker}/{chapter}/*.flac + *.trans.txt.")
