"""Read a run's bindings from gin text without touching the process's gin state.

Loaders of frozen models (the codec, the semantic tokenizer's w2v-BERT, the stage LMs) rebuild a
model's config from the operative gin config a trainer wrote beside its checkpoints. They must
not parse it into gin's global registry: the calling job runs under its own gin config, and the
configurables named in the file may not even be imported. So the text is read with gin's own
parser, macros (`%NAME`, as `VOCAB = 195` then `x.vocab_size = %VOCAB`) are resolved, includes
are expanded, and only the unscoped bindings of one configurable are returned.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

from gin import config_parser

from audiolm_jax import config as gin_paths


class _Macro:
    def __init__(self, name: str):
        self.name = name


class _Reference:
    def __init__(self, name: str):
        self.name = name


class _Delegate(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_configurable_name, evaluate):
        return _Reference(scoped_configurable_name)

    def macro(self, macro_name):
        return _Macro(macro_name)


def _statements(text: str, source: str, seen: tuple[str, ...] = ()):
    """gin statements of `text`, includes expanded in place (paths as `config.parse_gin`)."""
    try:
        parsed = list(config_parser.ConfigParser(text, _Delegate()))
    except SyntaxError as e:
        raise ValueError(f"{source}: not valid gin ({e}); pass the gin file the model was "
                         "trained with") from e
    for statement in parsed:
        if isinstance(statement, config_parser.IncludeStatement):
            path = _resolve_include(statement.filename, source)
            if path in seen:
                raise ValueError(f"{source}: include cycle through {path}")
            yield from _statements(Path(path).read_text(), path, seen + (path,))
        else:
            yield statement


def _resolve_include(name: str, source: str) -> str:
    beside = Path(source).parent / name
    if beside.is_file():
        return str(beside)
    return gin_paths.resolve_gin_file(name)


def _resolve(value: Any, macros: Mapping[str, Any], source: str, configurable: str,
             depth: int = 0) -> Any:
    if isinstance(value, _Macro):
        if value.name not in macros or depth > 20:
            raise ValueError(f"{source}: macro %{value.name} is not defined")
        return _resolve(macros[value.name], macros, source, configurable, depth + 1)
    if isinstance(value, _Reference):
        raise ValueError(f"{source}: {configurable} takes literal values, got @{value.name}")
    if isinstance(value, (list, tuple)):
        return tuple(_resolve(v, macros, source, configurable, depth) for v in value)
    return value


def configurable_bindings(texts: Sequence[tuple[str, str]], configurable: str
                          ) -> dict[str, tuple[Any, str]]:
    """{parameter: (value, source)} bound to `configurable` by gin `texts`.

    texts: [(gin text, source name for errors)]; later ones win. configurable: the class or
    function name, matched with or without its gin module (`TransformerConfig` matches
    `lm.TransformerConfig.x = ...`). Scoped bindings (`scope/Name.x`) are ignored: trainers bind
    model configs unscoped. Macros are resolved; `@references` are an error.
    """
    macros: dict[str, Any] = {}
    bound: dict[str, tuple[Any, str]] = {}
    for text, source in texts:
        for statement in _statements(text, source):
            if not isinstance(statement, config_parser.BindingStatement) or statement.scope:
                continue
            if not statement.arg_name:            # `NAME = value` defines a macro
                macros[statement.selector] = statement.value
            elif statement.selector.rsplit(".", 1)[-1] == configurable:
                bound[statement.arg_name] = (statement.value, source)
    return {name: (_resolve(value, macros, source, configurable), source)
            for name, (value, source) in bound.items()}


def dataclass_from_gin(cls: type, texts: Sequence[tuple[str, str]], *,
                       require_any: bool = False) -> Any:
    """`cls(**fields)` for a gin-configurable dataclass, from the unscoped bindings in `texts`.

    Every field is passed explicitly (unbound ones keep the dataclass defaults), so no binding
    of the calling process leaks in. Unknown parameters are an error naming the file; with
    `require_any`, so is a text that binds none (it is not the config of that kind of run).
    """
    bound = configurable_bindings(texts, cls.__name__)
    where = texts[-1][1] if texts else "<gin>"
    if require_any and not bound:
        raise ValueError(f"{where}: binds no {cls.__name__} parameter; it is not the config of "
                         "a run of this kind of model")
    fields = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING
                       else f.default) for f in dataclasses.fields(cls)}
    unknown = sorted(set(bound) - set(fields))
    if unknown:
        raise ValueError(f"{bound[unknown[0]][1]}: {cls.__name__} has no field(s) {unknown}; "
                         f"known fields: {sorted(fields)}")
    missing = sorted(name for name, default in fields.items()
                     if default is dataclasses.MISSING and name not in bound)
    if missing:
        raise ValueError(f"{where}: binds no {cls.__name__}.{missing[0]}, which has no default; "
                         "pass the gin config of the run")
    fields.update({name: value for name, (value, _) in bound.items()})
    return cls(**fields)
