"""Using a trained model: bundles, ``load_detector``, ``anomaly predict``, ONNX export,
``anomaly serve``. Above training, scoring and evaluation; below the CLI."""
