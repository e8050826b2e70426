"""The model zoo's tooling: publishing a trained model into ``checkpoints/``, its model card, the README's
zoo table, and the check that every card still matches ``moezoo eval``.

The shipped models themselves are read by the registry (:mod:`moezoo.registry.shipped`) and loaded by
``moezoo.load(name)``; this package writes them. It sits above training and evaluation in the import
layers, since publishing evaluates the stored bytes.

Modules:
    publish: :func:`~moezoo.zoo.publish.publish`, a trained model dir -> ``checkpoints/ARCH.TAG/``.
    store: the staged checkpoint (bf16 option, shared tokenizer reference), digests, the atomic swap.
    card: the Hugging Face model card, rendered from the manifest entry.
    results: eval figures as an entry keeps them (own, baselines, counts), tolerance, headline.
    table: the README's zoo table.
    verify: re-measure a shipped model's figures.
    facts: architecture facts of a model (``moezoo info``, the card).
    datasets: training datasets and their licences.
"""
