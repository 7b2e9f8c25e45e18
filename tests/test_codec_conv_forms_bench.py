"""benchmarks/codec_conv_forms.py: the layer list read from the codec's jaxpr, and its CPU smoke."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import codec_conv_forms  # noqa: E402


def test_layers_come_from_the_model_and_each_form_is_timed(tmp_path):
    layers, skipped, others = codec_conv_forms.codec_convolutions(
        "experiments/codec_tiny_cpu", [], batch=2, seconds=0.1)
    keys = [key for key, _ in layers]
    # The generator's 1-channel stem (k7) and head, the wave discriminators' 1-channel stems (k15)
    # and grouped k41 stride-4 layers are all there; the decoder's transposed convolutions and
    # the STFT discriminator's 2-D ones are listed apart (timed as they are).
    assert any(w == (7, 1, 4) for _, w, *_ in keys)
    assert any(w[0] == 15 and w[1] == 1 for _, w, *_ in keys)
    assert any(w[0] == 41 and stride == 4 and groups > 1
               for _, w, _, stride, _, _, groups in keys)
    assert skipped["transposed (input dilation)"] == 4 and skipped["2-D"] > 0
    assert sum(count for _, count in others) == sum(skipped.values())
    out = tmp_path / "forms.json"
    result = codec_conv_forms.main(["--gin", "experiments/codec_tiny_cpu", "--batch", "1",
                                    "--seconds", "0.05", "--repeats", "1",
                                    "--forms", "xla,im2col", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["layers"] and saved["layers"] == json.loads(json.dumps(result["layers"]))
    for row in saved["layers"]:
        assert set(row["ms"]) == {"xla", "im2col"} and row["best"] in row["ms"]
    assert {row["kind"] for row in saved["xla_only_layers"]} == set(saved["xla_only_counts"])
    totals = saved["ms_forward_backward_all_layers"]
    assert 0 < totals["best_per_layer"] <= totals["xla"]
