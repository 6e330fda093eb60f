"""Export a trained run and check each artifact against the Keras model it came from.

Formats (declared once, in `formats.FORMATS`): TFLite float32, dynamic-range, float16 and
full-integer INT8 (int8 or uint8 input/output, calibrated on the training split), a TF
SavedModel for TF Serving, ONNX
(through tf2onnx, checked with onnxruntime) and a copy of the `.keras` file. Every
artifact is loaded back in its own runtime (LiteRT, TensorFlow, onnxruntime, Keras) and
compared with the Keras model on the run's test split: the **parity report**. An
artifact that loses more than `max_drop` accuracy points is marked failed, with a
suggested fallback.

Preprocessing travels with the model: our models take float32 RGB in 0..255 at the
run's image size and rescale inside their graph; `exports/metadata.json` records that,
the class names and the quantization parameters of every artifact. `RunFolder` gives the path
of every file in `exports/` (`export_artifact(fmt)`, with `Format.artifact` as its name;
`export_report_file`, `export_metadata_file`).

Importing this module is cheap (no TensorFlow): the dashboard reads reports and queues
exports through it; TensorFlow is imported by the functions that need it.
"""

from engine.export.convert import artifact_size, convert_tflite, export_artifact, export_onnx
from engine.export.formats import DEFAULT_FORMATS, DEMO_FORMATS, FORMATS, TFLITE_FORMATS, Format, format_label
from engine.export.job import export_metadata, export_run, load_run_split, run_export_job, write_metadata
from engine.export.report import (BATCH_SIZE, DEFAULT_CALIBRATION_SIZE, DEFAULT_LATENCY_RUNS, DEFAULT_MAX_DROP,
                                  EXPORT_JOB, ONNX_OPSET, ArtifactParity, ExportError, ExportReport, ExportRequest,
                                  check_exportable, read_metadata, read_report, request_export, suggest_fallback,
                                  summary)
from engine.export.runners import (KerasRunner, OnnxRunner, Runner, SavedModelRunner, TFLiteRunner, load_runner,
                                   measure_parity, predict_batched, time_runner)

__all__ = [
    "BATCH_SIZE", "DEFAULT_CALIBRATION_SIZE", "DEFAULT_FORMATS", "DEFAULT_LATENCY_RUNS", "DEFAULT_MAX_DROP",
    "DEMO_FORMATS", "EXPORT_JOB", "FORMATS", "ONNX_OPSET", "TFLITE_FORMATS", "ArtifactParity", "ExportError",
    "ExportReport", "ExportRequest", "Format", "KerasRunner", "OnnxRunner", "Runner",
    "SavedModelRunner", "TFLiteRunner", "artifact_size", "check_exportable", "convert_tflite",
    "export_artifact", "export_metadata", "export_onnx", "format_label", "export_run", "load_run_split", "load_runner",
    "measure_parity", "predict_batched", "read_metadata", "read_report", "request_export", "run_export_job",
    "suggest_fallback", "summary", "time_runner", "write_metadata",
]
