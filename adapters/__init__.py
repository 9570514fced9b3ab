"""Generic Dataloop <-> Hugging Face plumbing shared by every model module in `models/`."""
