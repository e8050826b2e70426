"""moezoo's models: the sparse-MoE language model (``moezoo.models.lm``) and, later,
the encoders, connectors and multimodal assemblies built around it."""
