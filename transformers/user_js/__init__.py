"""User JavaScript transformations (RudderStack's transformEvent / transformBatch API) in embedded V8.

The processor hands a whole batch to UserTransformer.run(); one V8 call transforms it.
"""

from transformers.user_js.results import BatchResult, EventResult, TransformationError, format_preview
from transformers.user_js.transformer import UserTransformer, run_file

__all__ = [
    "BatchResult",
    "EventResult",
    "TransformationError",
    "UserTransformer",
    "format_preview",
    "run_file",
]
