"""moezoo: a multimodal Mixture-of-Experts model zoo on PyTorch Lightning.

Importing moezoo stays light: the training stack (Lightning trainer, W&B,
webdataset) is only imported by the commands and modules that train.
"""

__version__ = "0.1.0"
