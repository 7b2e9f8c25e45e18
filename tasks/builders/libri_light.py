"""TFDS `libri_light`: a Libri-Light tree (or the small world's speech tree) from manual_dir."""
from tasks.builders.audio_tree import AudioTreeBuilder


class LibriLight(AudioTreeBuilder):
    """Libri-Light layout: {split}/{speaker}/{book}/{name}.flac (+ {name}.json, trans.txt)."""

    LAYOUT = "libri_light"
    HAS_TEXT = True  # Small-world trees carry transcripts; real Libri-Light gives "".
    DESCRIPTION = ("Speech from a local Libri-Light-layout tree: 16 kHz float32 audio, speaker, "
                   "book, transcript where the tree has one.")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Point manual_dir at a folder of split folders laid out "
        "{split}/{speaker}/{book}/{name}.flac: an unpacked Libri-Light (e.g. small/, medium/) or "
        "the small world's speech tree (`audiolm-jax corpus speech`).")
