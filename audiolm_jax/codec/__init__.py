"""SoundStream acoustic tokenizer: causal SEANet encoder/decoder, residual VQ, discriminators,
losses and the numpy encode/decode API.

Data flow: wav [batch, samples] -> SEANetEncoder -> [batch, frames, D] -> ResidualVectorQuantizer
-> codes [batch, frames, Q] -> lookup -> SEANetDecoder -> wav [batch, frames * 320].
"""
from audiolm_jax.codec.api import (
    bitrate_kbps,
    check_codes,
    decode,
    decode_batch,
    encode,
    encode_batch,
    pad_to_frames,
)
from audiolm_jax.codec.discriminators import (
    CodecDiscriminatorConfig,
    CodecDiscriminators,
    DiscriminatorOutput,
    MultiScaleWaveDiscriminator,
    STFTDiscriminator,
    WaveDiscriminator,
)
from audiolm_jax.codec.losses import (
    CodecLossConfig,
    discriminator_losses,
    feature_matching_loss,
    generator_losses,
    hinge_discriminator_loss,
    hinge_generator_loss,
    multi_scale_spectral_loss,
)
from audiolm_jax.codec.rvq import QuantizerState, ResidualVectorQuantizer, RVQOutput
from audiolm_jax.codec.seanet import SEANetDecoder, SEANetEncoder
from audiolm_jax.codec.soundstream import SoundStream, SoundStreamConfig, SoundStreamOutput

__all__ = [
    "SoundStream", "SoundStreamConfig", "SoundStreamOutput", "SEANetEncoder", "SEANetDecoder",
    "ResidualVectorQuantizer", "RVQOutput", "QuantizerState",
    "CodecDiscriminators", "CodecDiscriminatorConfig", "DiscriminatorOutput",
    "WaveDiscriminator", "MultiScaleWaveDiscriminator", "STFTDiscriminator",
    "CodecLossConfig", "generator_losses", "discriminator_losses", "hinge_discriminator_loss",
    "hinge_generator_loss", "feature_matching_loss", "multi_scale_spectral_loss",
    "encode", "decode", "encode_batch", "decode_batch", "bitrate_kbps", "check_codes",
    "pad_to_frames",
]
