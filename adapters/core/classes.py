"""Class outputs of the classifier modules: the `output_type` key and, for multi-label zero-shot, `threshold`.

`text` (the default) answers every question with a `dl.FreeText` holding the label's name. `class` answers a text
item (text/plain, text/markdown: the usual Dataloop text dataset) with a `dl.Classification`, the platform's own
class annotation, which its studio, filters and evaluation views read. Prompt items keep free-text answers whatever
`output_type` says: `dl.PromptItem.from_item` refuses an item holding a classification ("Unsupported annotation
type: class"), which would break every chat reader of that item; their answers record the label set instead.
"""
from __future__ import annotations

from .settings import Setting

TEXT, CLASS = "text", "class"
OUTPUT_TYPE = Setting("output_type", (str,), "'text': a free-text answer (the label's name); 'class': a "
                      "dl.Classification on each text item (prompt items keep free-text answers)", choices=(TEXT, CLASS))
THRESHOLD = Setting("threshold", (float,), "with output_type 'class' and multi_label: a text item gets one "
                    "classification per label scoring at least this", minimum=0.0, maximum=1.0)
