"""Benchmarks behind ``moezoo bench NAME``.

Each module in :data:`BENCHMARKS` provides ``add_arguments(parser)`` and
``run(args) -> dict``; every figure the timing benchmarks print is a median over repeats,
and every target is a ratio against a baseline timed in the same run (``routers`` reads
the shipped model cards instead; ``probe`` measures how fast a design learns one question type).
"""

BENCHMARKS = {
    "moe-layer": "moezoo.bench.moe_layer",
    "model": "moezoo.bench.model",
    "generate": "moezoo.bench.generate",
    "mm-model": "moezoo.bench.mm_model",
    "data": "moezoo.bench.data",
    "routers": "moezoo.bench.routers",
    "probe": "moezoo.bench.probe",
}
