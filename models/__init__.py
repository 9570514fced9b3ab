"""One module per model. Only modules of this folder may be named by a configuration's `module_name`."""
