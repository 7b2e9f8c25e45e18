"""The tokenize job as an Apache Beam pipeline: shards as elements, one DoFn per worker.

    shard plans --Create--> Reshuffle --ParDo(TokenizeShardFn)--> shard records

The same pipeline runs on the DirectRunner (the default here) and on Dataflow, Flink or Spark
(pass `--runner=...` and its options as `pipeline_args`). The DoFn loads the frozen models once
per worker in `setup` and calls `job.ensure_shard`, exactly what the local runner calls, so both
write the same bytes. The driver writes the manifest after the pipeline, from the shard records.
Beam is imported only here, inside the functions: the library imports without it.
Workers need the corpus and the out directory on a shared file system (the job uses os paths).
"""
from __future__ import annotations

from typing import Sequence

NAMESPACE = "audiolm_jax.tokenize"


def make_tokenize_fn(spec):
    """A `beam.DoFn` tokenizing the shard plans it receives (models loaded once in `setup`)."""
    import apache_beam as beam  # noqa: PLC0415

    from audiolm_jax.tokens import job  # noqa: PLC0415

    class TokenizeShardFn(beam.DoFn):
        def __init__(self, spec):
            self.spec = spec
            self.models = None

        def setup(self):
            from audiolm_jax.tokens.models import FrozenTokenizers  # noqa: PLC0415

            self.models = FrozenTokenizers.from_spec(self.spec)

        def process(self, plan):
            record = job.ensure_shard(self.models, self.spec, plan, log=print)
            if record.get("written"):
                beam.metrics.Metrics.counter(NAMESPACE, "shards_written").inc()
                beam.metrics.Metrics.counter(NAMESPACE, "audio_ms_written").inc(
                    round(record["seconds"] * 1000))
            yield record

    return TokenizeShardFn(spec)


def build_pipeline(pipeline, spec, plans):
    """Adds the tokenize steps to `pipeline`; returns the PCollection of shard records."""
    import apache_beam as beam  # noqa: PLC0415

    return (pipeline
            | "ShardPlans" >> beam.Create(list(plans))
            | "Spread" >> beam.Reshuffle()
            | "Tokenize" >> beam.ParDo(make_tokenize_fn(spec)))


def run_beam(spec, plans, pipeline_args: Sequence[str] = ()) -> tuple[int, float]:
    """Runs the pipeline to completion; returns (shards written, seconds of audio in them) from
    the pipeline's metrics (the records themselves stay on the workers' file system)."""
    try:
        import apache_beam as beam  # noqa: PLC0415
        from apache_beam.metrics.metric import MetricsFilter  # noqa: PLC0415
        from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415
    except ImportError as e:
        raise ImportError("the beam runner needs Apache Beam: pip install -e '.[data]' "
                          "(or use --runner local)") from e
    args = list(pipeline_args)
    if not any(a.startswith("--runner") for a in args):
        args.append("--runner=DirectRunner")
    pipeline = beam.Pipeline(options=PipelineOptions(args))
    build_pipeline(pipeline, spec, plans)
    result = pipeline.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed if c.committed is not None else c.attempted
                for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]}
    return int(counters.get("shards_written", 0)), counters.get("audio_ms_written", 0) / 1000.0
