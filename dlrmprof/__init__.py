"""dlrmprof: a hardware-focused systems profiler and synthetic-trace toolkit for DLRM."""

__version__ = "0.1.0"
