"""The openvino format: see ``spec.py`` for what it declares. Importing this package imports no backend."""
