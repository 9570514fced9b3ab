"""Fine-tuning and evaluation shared by every model module: the Dataloop data layout, the loop, the metrics.

A model module adds only what is specific to it (`training_rows`: how one answered question becomes training
rows; `prepare_training`: labels/heads; `metric_family`: which metric), so a new model stays one short file.
"""

# The label id the losses skip (a prompt's tokens in a language model's labels): PyTorch's and transformers'
# default; here, not in loop.py, so that model modules read it without importing the training loop (Trainer).
IGNORE_INDEX = -100
