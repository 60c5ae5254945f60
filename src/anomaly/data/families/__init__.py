"""Dataset families, one module per family (``<name>.py``), registered in ``registry``.

Nothing is imported here on purpose: the download stage imports the active family's
module by name, so its DVC dependency is that module (``${dataset.name}.py``) plus
the shared reader code, not every family.
"""
