"""moezoo's checkpoint format: one writer and one reader for every model class.

A checkpoint dir holds:

* ``moezoo_config.json``: ``{"format": "moezoo", "version", "architecture", "config"}``; the
  architecture is a registered family (:func:`moezoo.models.spec.spec_for`), the config
  its typed config as JSON (litgpt keeps ``model_config.yaml`` the same way);
* ``model.safetensors``: the weights (never pickle);
* the tokenizer files, and for multimodal models ``moezoo_processor.json`` (the
  preprocessing, saved with the weights so the two never drift apart).

Modules:
    files: file names, safetensors read / write, dtype names, state-dict checks.
    writer: :func:`~moezoo.checkpoint.writer.save`, what ``model.save_pretrained`` calls.
    reader: :func:`~moezoo.checkpoint.reader.load`, what ``moezoo.load`` calls on a moezoo dir.

This package knows only moezoo's own format. It sits above models/ in the layer order: the
writer registers itself as the ``"moezoo"`` save format (:func:`moezoo.models.spec.register_format`),
so ``model.save_pretrained`` reaches it without importing upward; the reader dispatches on the
architecture named in the file.
"""
