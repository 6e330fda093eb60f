"""Make a run's model smaller as a new child run: knowledge distillation into a student, or magnitude pruning.

`request_compress(workspace, run_id, CompressRequest(...))` checks the request and queues a `compress`
job on a new run whose parent is `run_id`; the job (`engine.compress.job`, TensorFlow) trains the
student or prunes while fine-tuning, then writes the child's model, test predictions and
`compress_report.json`. Importing this package is cheap (no TensorFlow): the dashboard uses it.
"""

from engine.compress.request import (COMPRESS_JOB, DEFAULT_ALPHA, DEFAULT_EPOCHS, DEFAULT_SPARSITY,
                                     DEFAULT_TEMPERATURE, METHODS, SCHEDULES, CompressError, CompressRequest,
                                     check_compressible, child_config, read_compress_report, request_compress,
                                     student_config)

__all__ = ["COMPRESS_JOB", "CompressError", "CompressRequest", "DEFAULT_ALPHA", "DEFAULT_EPOCHS", "DEFAULT_SPARSITY",
           "DEFAULT_TEMPERATURE", "METHODS", "SCHEDULES", "check_compressible", "child_config",
           "read_compress_report", "request_compress", "student_config"]
