"""AudioLM generation: compiled KV-cached sampling, the three stages, the pipeline and its files.

    sampling.py   prefill + `lax.while_loop` decoding, temperature/top-k/top-p, id ranges
    timing.py     frames <-> seconds, sliding windows, fine-stage chunks
    stages.py     stage 1 (semantic), stage 2 (coarse), stage 3 (fine) on token arrays
    prompt.py     prompt audio: checks, downmix/resample notes
    loading.py    a stage LM from a trainer run or an export (config from its operative gin)
    pipeline.py   AudioLM: continuation, unconditional, acoustic generation; piano two-stage
    outputs.py    WAVs, spectrogram PNG with the prompt boundary, tokens JSON

Nothing here imports TensorFlow.
"""
