"""User JavaScript transformations (RudderStack's transformEvent / transformBatch API) in embedded V8.

The processor hands a destination's chunks to UserTransformer.run_chunks(); each chunk is one V8 call
in a worker process that holds the memory limit (docs/decisions/0005).
"""

from transformers.user_js.pool import WorkerStartError
from transformers.user_js.results import BatchResult, EventResult, TransformationError, format_preview
from transformers.user_js.transformer import UserTransformer, run_file

__all__ = [
    "BatchResult",
    "EventResult",
    "TransformationError",
    "UserTransformer",
    "WorkerStartError",
    "format_preview",
    "run_file",
]
