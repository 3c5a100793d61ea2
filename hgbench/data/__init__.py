"""Data: MPII annotations and Dataset, the synthetic MPII-format generator, and the crop/heatmap transforms."""
