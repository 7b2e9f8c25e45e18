"""TFDS builders over local audio trees; importing this package registers them."""
from tasks.builders.audio_tree import SKIPPED_FILE, AudioTreeBuilder
from tasks.builders.libri_light import LibriLight
from tasks.builders.librispeech import LibrispeechTree
from tasks.builders.piano import MaestroLikePiano

# TFDS name -> builder class (names come from the class names).
BUILDERS = {b.name: b for b in (LibriLight, LibrispeechTree, MaestroLikePiano)}

__all__ = ["AudioTreeBuilder", "SKIPPED_FILE", "LibriLight", "LibrispeechTree", "MaestroLikePiano",
           "BUILDERS"]
