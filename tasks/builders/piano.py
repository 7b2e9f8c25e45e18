"""TFDS `maestro_like_piano`: a MAESTRO-like piano tree (or the small world's) from manual_dir."""
from tasks.builders.audio_tree import AudioTreeBuilder


class MaestroLikePiano(AudioTreeBuilder):
    """Piano layout: {split}/{performer}/{piece}/{name}.flac (+ {name}.mid, {name}.json)."""

    LAYOUT = "piano"
    HAS_TEXT = False
    DESCRIPTION = ("Piano performances from a local MAESTRO-like tree: 16 kHz float32 audio, "
                   "performer (as `speaker`) and piece (as `group`).")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Point manual_dir at a folder of split folders laid out {split}/{performer}/{piece}/"
        "{name}.flac: the small world's piano tree (`audiolm-jax corpus piano`) or a MAESTRO "
        "tree rearranged that way (16 kHz conversion happens on read).")
