"""Evaluation: metrics and the paper's measurements.

codec_metrics  ViSQOL (speech mode), PESQ-WB, STOI, log-mel distance
opus           the Opus baseline: opusenc/opusdec round trip with its real bitrate
codec_model    the SoundStream a codec benchmark measures (gin config, random or checkpoint)
run_info       command, machine and date stored with every measured figure
"""
from audiolm_jax.eval.codec_metrics import (
    HIGHER_IS_BETTER,
    METRICS,
    MetricError,
    MetricUnavailable,
    VisqolSpeech,
    log_mel,
    measure,
    mel_distance,
    pesq_wb,
    stoi,
    visqol_speech,
)
from audiolm_jax.eval.opus import (
    OpusError,
    OpusResult,
    OpusToolsMissing,
    ogg_packet_sizes,
    opus_round_trip,
    require_opus_tools,
)

__all__ = [
    "METRICS", "HIGHER_IS_BETTER", "MetricError", "MetricUnavailable", "VisqolSpeech",
    "visqol_speech", "pesq_wb", "stoi", "log_mel", "mel_distance", "measure",
    "OpusError", "OpusResult", "OpusToolsMissing", "ogg_packet_sizes", "opus_round_trip",
    "require_opus_tools",
]
