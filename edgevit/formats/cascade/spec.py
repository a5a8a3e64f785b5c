"""Early-exit cascade: static segment and head graphs (ONNX, OpenVINO IR, ORT format, TVM libraries or TensorRT
engines) + ``manifest.json``."""

from __future__ import annotations

from ...format_registry import FormatSpec

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "edgevit-early-exit-cascade"  # the manifest's "format" field
IF_FORM_KEY = "edgevit.early_exit_form"  # ONNX metadata: "if" marks the single-graph If form (batch 1)
IF_EXIT_OUTPUT = "edgevit_exit"  # the If form's second output: the exit taken (0-based; the number of exits = final)
# manifest "backend" (the graphs' format) → the runtime that runs its graphs (the cascade runtime's default backend)
# (tvm: one compiled library per graph, symbolic batch; tensorrt: engines built on the device from a bundle)
GRAPH_BACKENDS = {"onnx": "onnxruntime", "openvino": "openvino", "ort": "onnxruntime", "tvm": "tvm",
                  "tensorrt": "tensorrt"}
GRAPH_SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "ort": ".ort", "tvm": ".so", "tensorrt": ".engine"}

SPEC = FormatSpec(
    name="cascade", kind="cascade", suffixes=(MANIFEST,),
    description="early-exit cascade: segments + exit heads + manifest.json (and the single-graph If form)",
    runtimes={"cascade": "edgevit.formats.cascade.runtime:CascadeRuntime"},
    metadata_reader="edgevit.formats.cascade.runtime:read_manifest_metadata",
    backends=("onnxruntime", "openvino", "tvm", "tensorrt"),
)
