"""One :class:`ArchitectureSpec` per model family: the one place that says what a family is.

A spec is registered beside its model class (the bottom of the family's model module)
and holds what the rest of moezoo needs to know about the family: its config and model
classes, how to build its processor from a config (without building the model), how to
upcycle it, and the name its checkpoints record. The parts that sit *above* models/ in
the layer order register against the spec from their own package, so no import runs
upward:

* :mod:`moezoo.convert` registers each family's transformers importers (by ``model_type``)
  and its exporter, or the reason export is refused;
* :mod:`moezoo.checkpoint` registers the ``"moezoo"`` save format.

Those packages are loaded by :func:`load_plugins` on first need (a name that is not
registered yet, ``save_pretrained``), together with third-party families, which register
through the ``moezoo.architectures`` entry-point group: an entry point names a module (or a
callable) that calls :func:`register_architecture` when imported (or called). The models
themselves implement a small protocol (:class:`~moezoo.models.base.ZooModel`):
``language_model``, ``encoders()``, ``parts()``, ``moe_sites()``, ``parallel_units()``; code
that trains, shards or evaluates a model asks it, never probes it for attributes.

Example:
    >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
    >>> spec = spec_for("MoEForCausalLM")
    >>> spec.model_class is MoEForCausalLM, spec_for(LMConfig) is spec
    (True, True)
    >>> spec_for("MoeForCausalLM")
    Traceback (most recent call last):
    ...
    ValueError: unknown architecture 'MoeForCausalLM'; moezoo builds ['MoEForCausalLM', 'MultimodalMoEForCausalLM', 'Qwen3VLMoEForConditionalGeneration']. Did you mean ['MoEForCausalLM', 'MultimodalMoEForCausalLM']?
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable

ENTRY_POINT_GROUP = "moezoo.architectures"
# moezoo's own families and the layers above models/ that register against them, imported by
# name on first need: the dependency inversion that keeps models/ below checkpoint/ and convert/.
BUILTIN_PLUGINS = ("moezoo.models.lm", "moezoo.models.multimodal", "moezoo.checkpoint.writer", "moezoo.convert")


@dataclass
class ArchitectureSpec:
    """Everything moezoo knows about one model family.

    Attributes:
        name: the architecture name checkpoints record (``moezoo_config.json``'s ``architecture``);
            by convention the model class's name.
        config_class: the typed config the model is built from (``to_dict`` / ``from_dict``).
        model_class: ``model_class(config)`` builds the model; it implements
            :class:`~moezoo.models.base.ZooModel`'s protocol.
        processor: ``processor(config, tokenizer)`` -> the preprocessing that feeds a model of
            ``config`` (a :class:`~moezoo.processing.processor.Processor`), or ``None`` when the
            tokenizer alone feeds it (text LMs). Computed from the config, without the model.
        upcycle: ``upcycle(model, num_experts=, top_k=, router=, **kwargs)`` -> a sparse-upcycled
            copy, or ``None`` when the family cannot be upcycled.
        language_config: ``language_config(config)`` -> the config of the language model inside
            (its vocabulary, width, MoE layers).
        exporter: ``exporter(model, path, **kwargs)`` writing a transformers checkpoint, registered
            by :mod:`moezoo.convert` (:meth:`register_exporter`); ``None`` until then.
        export_refusal: why the family has no transformers format, when it has none.
        processor_reader: ``processor_reader(path)`` -> the processor a moezoo checkpoint dir holds, for a
            family whose processor is not the generic one (``moezoo_processor.json``), or ``None``.
    """

    name: str
    config_class: type
    model_class: type
    processor: Callable[[Any, Any], Any] | None = None
    upcycle: Callable[..., Any] | None = None
    language_config: Callable[[Any], Any] = lambda config: config
    exporter: Callable[..., Any] | None = None
    export_refusal: str | None = None
    processor_reader: Callable[[Any], Any] | None = None

    def register_exporter(self, exporter: Callable[..., Any]) -> Callable[..., Any]:
        """Make ``exporter(model, path, **kwargs)`` this family's ``save_pretrained(format="hf")``."""
        self.exporter, self.export_refusal = exporter, None
        return exporter

    def refuse_export(self, reason: str) -> None:
        """Say why this family has no transformers format (``save_pretrained(format="hf")`` raises it)."""
        self.exporter, self.export_refusal = None, reason

    def export(self, model: Any, path: Any, **kwargs: Any) -> Any:
        """Write ``model`` as a transformers checkpoint, or raise the reason it cannot be."""
        load_plugins()
        if self.exporter is None:
            reason = self.export_refusal or "no exporter is registered for it"
            raise ValueError(f"{self.name} has no transformers format: {reason}")
        return self.exporter(model, path, **kwargs)


_SPECS: dict[str, ArchitectureSpec] = {}
_IMPORTERS: dict[str, tuple[ArchitectureSpec, Callable[..., Any]]] = {}  # HF model_type -> (spec, importer)
_HF_NAMES: dict[str, str] = {}  # HF model_type -> the transformers class named in errors
_FORMATS: dict[str, Callable[..., Any]] = {}  # save format -> writer(model, path, **kwargs)
_plugins_loaded = False


def register_architecture(spec: ArchitectureSpec) -> ArchitectureSpec:
    """Register ``spec`` under ``spec.name`` and return it (idempotent for the same classes).

    Raises:
        ValueError: another family already holds the name or the config class.
    """
    for other in _SPECS.values():
        same = (other.model_class.__qualname__, other.model_class.__module__) == \
            (spec.model_class.__qualname__, spec.model_class.__module__)
        if other.name == spec.name and not same:
            raise ValueError(f"architecture {spec.name!r} is registered twice ({other.model_class.__module__} "
                             f"and {spec.model_class.__module__})")
        if other.name != spec.name and other.config_class is spec.config_class:
            raise ValueError(f"{spec.config_class.__name__} already builds {other.name!r}; each family needs its "
                             "own config class, so a config names its model")
    previous = _SPECS.get(spec.name)
    if previous is not None:  # a module re-imported (doctest collection): keep what was registered against it
        spec.exporter, spec.export_refusal = previous.exporter, previous.export_refusal
    _SPECS[spec.name] = spec
    return spec


def unregister_architecture(name: str) -> None:
    """Forget family ``name`` and its importers (a test's toy family cleans up after itself)."""
    spec = _SPECS.pop(name, None)
    for model_type in [t for t, (s, _) in _IMPORTERS.items() if s is spec]:
        del _IMPORTERS[model_type], _HF_NAMES[model_type]


def register_importer(spec: ArchitectureSpec, model_type: str, importer: Callable[..., Any],
                      hf_architecture: str | None = None) -> None:
    """Make ``importer(path, device=, dtype=)`` read transformers checkpoints of ``model_type`` into ``spec``'s family.

    ``hf_architecture`` (the transformers class, e.g. ``MixtralForCausalLM``) is what error messages name.
    """
    _IMPORTERS[model_type] = (spec, importer)
    _HF_NAMES[model_type] = hf_architecture or model_type


def register_format(name: str, writer: Callable[..., Any]) -> None:
    """Make ``writer(model, path, **kwargs)`` what ``save_pretrained(path, format=name)`` runs."""
    _FORMATS[name] = writer


def load_plugins() -> None:
    """Import moezoo's own families and conversion layers, and every ``moezoo.architectures`` entry point, once.

    A third party's entry point names a module that registers its family when imported, or a
    callable that does when called.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in BUILTIN_PLUGINS:
        importlib.import_module(module)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry.load()
        if callable(loaded):
            loaded()


def spec_for(key: Any) -> ArchitectureSpec:
    """The spec of ``key``: an architecture name, a model (class or instance), or a config (class or instance).

    Raises:
        ValueError: nothing registered matches; the message lists what is, and the closest names.
    """
    spec = _find(key)
    if spec is None:
        load_plugins()
        spec = _find(key)
    if spec is not None:
        return spec
    if isinstance(key, str):
        close = difflib.get_close_matches(key, _SPECS, n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"unknown architecture {key!r}; moezoo builds {sorted(_SPECS)}.{hint}")
    what = key.__name__ if isinstance(key, type) else type(key).__name__
    raise ValueError(f"no registered architecture builds or takes a {what}; registered: {sorted(_SPECS)} "
                     f"(a new family registers an ArchitectureSpec: see moezoo.models.spec)")


def _find(key: Any) -> ArchitectureSpec | None:
    if isinstance(key, str):
        return _SPECS.get(key)
    cls = key if isinstance(key, type) else type(key)
    for spec in _SPECS.values():
        if cls is spec.config_class or (isinstance(cls, type) and issubclass(cls, spec.model_class)):
            return spec
    return None


def importer_for(model_type: str | None) -> Callable[..., Any] | None:
    """The importer registered for a transformers ``model_type``, or ``None``."""
    load_plugins()
    found = _IMPORTERS.get(model_type) if model_type is not None else None
    return found[1] if found else None


def importable_model_types() -> list[str]:
    """Every transformers ``model_type`` some family imports, as ``"MixtralForCausalLM (model_type 'mixtral')"``,
    in registration order (for error messages)."""
    load_plugins()
    return [f"{_HF_NAMES[t]} (model_type {t!r})" for t in _IMPORTERS]


def save_format(name: str) -> Callable[..., Any]:
    """The writer of save format ``name`` (``"moezoo"``, ``"hf"``, ...).

    Raises:
        ValueError: an unknown format, listing the known ones.
    """
    load_plugins()
    if name == "hf":
        return lambda model, path, **kwargs: spec_for(model).export(model, path, **kwargs)
    if name not in _FORMATS:
        raise ValueError(f"unknown format {name!r}; use one of {sorted({*_FORMATS, 'hf'})}")
    return _FORMATS[name]
