"""Model families, one module per model (``<name>.py``), registered in ``registry``.

Nothing is imported here on purpose: the registry imports a model's module by
name when it is used, so loading one model never loads (nor depends on) another.
"""
