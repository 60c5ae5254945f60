"""Comparing and showing runs: the report, figures, data exploration, sweeps and
``anomaly select``. Above evaluation and training; below the stages and the CLI."""
