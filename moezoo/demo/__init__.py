"""``moezoo demo``: a Gradio page on 127.0.0.1 that answers a question about an image (and a sound) with a
zoo model and shows which experts handled each token (issue J).

- :mod:`moezoo.demo.session`: the models offered, their cards, one answered question (the code path of
  ``moezoo chat``, :mod:`moezoo.eval.chat`);
- :mod:`moezoo.demo.routing`: the routing of an exchange, per token and MoE layer, and its HTML table;
- :mod:`moezoo.demo.example`: the preloaded image and sound, from the shipped datasets' generators;
- :mod:`moezoo.demo.app`: the page itself, the only module that imports Gradio (the ``[demo]`` extra:
  ``pip install 'moezoo[demo]'``). Nothing else in moezoo imports it.

This package's own import is free (no torch, no gradio), so ``moezoo --help`` stays fast.

Example:
    >>> FLAGSHIP
    'film_cnn_moe_small.flagship'
"""

FLAGSHIP = "film_cnn_moe_small.flagship"  # the model the page opens with unless the command names another
INSTALL_HINT = "pip install 'moezoo[demo]'"

__all__ = ["FLAGSHIP", "INSTALL_HINT"]
