"""bam: benchmarking attribution methods with relative feature importance.

Successor of BAM (Yang & Kim, 2019, arXiv:1907.09701). Sub-packages: ``bam.data`` (dataset
build and loading), ``bam.models`` (model registry, checkpoints), ``bam.train`` (trainer),
``bam.methods`` (attribution methods), ``bam.metrics`` (MCS, IDR, IIR, RMCS),
``bam.evaluate`` (runner and reports).
"""

__version__ = "0.1.0"
