"""Platform glue: the dtlpy ModelAdapter entry point, answers already on items, and the offline runner."""
