"""hgbench: a benchmarking harness for Stacked Hourglass human-pose networks (Newell et al., 2016) on MPII."""

__version__ = "0.2.0"
