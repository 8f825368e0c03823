"""Command-line overrides checked against the config files before a workflow does any work.

``python -m monai.bundle run training --config_file ... --epoch 1`` passes ``epoch=1`` on to MONAI, which adds it to
the config as a new key that nothing reads: the typo is silent and all epochs run. A value of the wrong type
(``--epochs abc``, ``--batch_size 2.5``) is only noticed, if at all, by the first expression that uses it, after the
data were generated or cached, and the error names no key. :func:`check_cli_overrides`, an item of every
workflow's ``initialize`` list (MONAI runs it before ``run``), compares the ``--key value`` pairs of the command line
with the keys and values of the ``--config_file`` file(s) and stops the run (exit status 2) naming each bad key:

- a key must exist in the merged config files (nested keys with ``#``: ``--network_def#dim 24``), or be a keyword
  argument of the ``_target_`` of the component it is set in (``--datalist#num_cases 6``), or be an argument of
  MONAI's ``run`` (``--config_file``, ``--tracking``, ...) or, with ``--tracking``, a tracking setting
  (``--run_name``); unknown keys get a close-match suggestion;
- the value must fit the type of the config value: int -> int, float -> int or float, bool -> true/false (as
  :func:`scripts.flags.as_bool` reads it), list -> list, dict -> dict; strings, ``null``, ``$`` expressions, ``@``
  references and ``_target_`` components take anything, and ``$``/``@``/``%`` values given on the command line are
  not checked.

Only a real ``python -m monai.bundle run`` command line is checked: MONAI Label and tests run the same configs
in-process, with their own overrides, under another program's ``sys.argv``.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.flags import as_bool

__all__ = ["check_cli_overrides", "fail", "find_override_problems", "is_bundle_run", "parse_cli_args"]

#: keys a ``_target_`` component may hold besides the target's arguments (MONAI's reserved keys).
_COMPONENT_KEYS = ("_target_", "_disabled_", "_requires_", "_desc_", "_mode_")
_UNCHECKED_PREFIXES = ("$", "@", "%")
_ID_SEP = re.compile(r"#|::")


def is_bundle_run(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is the command line of ``python -m monai.bundle run ...`` (also under torchrun)."""
    if len(argv) < 2 or argv[1] != "run":
        return False
    main = Path(argv[0])
    return main.name == "__main__.py" and main.parent.name == "bundle" and main.parent.parent.name == "monai"


def fail(error: BaseException, argv: Sequence[str] | None = None) -> None:
    """End a ``python -m monai.bundle run`` command with ``error``'s message on stderr and exit status 1, without a
    traceback: MONAI evaluates workflow steps as ``$`` expressions and would bury the message under "Failed to
    evaluate ConfigExpression" and a page of frames (``SystemExit`` passes through that wrapper). Anywhere else
    (MONAI Label, tests, benchmarks, in-process runs) ``error`` is raised, for the caller to handle."""
    if not is_bundle_run(list(sys.argv if argv is None else argv)):
        raise error from None
    print(f"error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def _is_flag(arg: str) -> bool:
    return arg.startswith("--") or re.match(r"^-[a-zA-Z]", arg) is not None  # "-1" is a value, as in fire


def _parse_value(text: str) -> Any:
    try:
        from fire.parser import DefaultParseValue
    except ImportError:  # pragma: no cover - monai.bundle's CLI needs fire, so it is there whenever we check
        import ast

        try:
            return ast.literal_eval(text)
        except (SyntaxError, ValueError):
            return text
    return DefaultParseValue(text)


def parse_cli_args(args: Sequence[str], named: Iterable[str] = ()) -> dict[str, Any]:
    """The ``--key value`` / ``--key=value`` pairs of the arguments after ``run``, parsed the way python-fire does
    for a function with ``**kwargs`` (values through fire's parser; a flag without a value is ``True``, or ``False``
    for ``--noKEY`` when ``KEY`` is not one of ``named``; hyphens in keys become underscores; the last lone ``--``
    ends the function's arguments)."""
    named = set(named)
    out: dict[str, Any] = {}
    args = list(args)
    if "--" in args:  # fire's own flags (--help, --trace) follow the last one
        args = args[: len(args) - 1 - args[::-1].index("--")]
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not _is_flag(arg):
            continue  # positional: run_id, init_id, ...
        key, eq, value = arg.lstrip("-").partition("=")
        key = key.replace("-", "_")
        if eq:
            out[key] = _parse_value(value)
        elif i == len(args) or _is_flag(args[i]):
            if key not in named and key.startswith("no"):
                out[key[2:]] = False
            else:
                out[key] = True
        else:
            out[key] = _parse_value(args[i])
            i += 1
    return out


def _run_arguments() -> set[str]:
    """Keyword arguments of MONAI's ``run`` and of what it passes them to (``create_workflow``, ``ConfigWorkflow``)."""
    from monai.bundle import ConfigWorkflow
    from monai.bundle.scripts import create_workflow, run

    names: set[str] = set()
    for fn in (run, create_workflow, ConfigWorkflow.__init__):
        for p in inspect.signature(fn).parameters.values():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self":
                names.add(p.name)
    return names


def _named_parameters(fn: Any) -> tuple[set[str], bool]:
    params = list(inspect.signature(fn).parameters.values())
    named = {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
    return named, any(p.kind == p.VAR_KEYWORD for p in params)


def _target_parameters(component: Mapping[str, Any]) -> tuple[set[str], bool] | None:
    """Argument names of a component's ``_target_`` and whether it takes any other keyword; ``None`` if it cannot
    be located or inspected (then nothing can be said about the key).

    ``**kwargs`` are followed where they usually go: a class's to the ``__init__`` of its base classes (MONAI's
    ``DataLoader`` -> torch's), a classmethod constructor's to its class (``VLDUN.from_preset`` -> ``VLDUN``);
    the first signature without ``**kwargs`` closes the set.
    """
    from monai.bundle import ConfigComponent
    from monai.utils.module import locate

    try:
        target = locate(ConfigComponent(config=dict(component)).resolve_module_name())
        owner = target.__self__ if inspect.ismethod(target) and inspect.isclass(target.__self__) else None
        cls = target if inspect.isclass(target) else owner
        inits = [c.__init__ for c in (cls.__mro__ if cls else ()) if "__init__" in vars(c) and c is not object]
        chain = inits if cls is target else [target, *inits]
        names: set[str] = set()
        for fn in chain:
            named, more = _named_parameters(fn)
            names |= named
            if not more:
                return names, False
    except Exception:  # unknown module, C callable without a signature: leave the key to MONAI
        return None
    return names, True


def _unchecked(value: Any) -> bool:
    """Values whose type is only known once evaluated: expressions, references, macros and components."""
    if isinstance(value, str):
        return value.startswith(_UNCHECKED_PREFIXES)
    return isinstance(value, Mapping) and "_target_" in value


def _type_problem(default: Any, value: Any) -> str | None:
    """Why ``value`` cannot replace the config value ``default`` (``None`` if it can)."""
    if default is None or _unchecked(default) or _unchecked(value):
        return None
    if isinstance(default, bool):
        try:
            as_bool(value)
        except ValueError:
            return "a boolean (true/false)"
        return None
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an int"
    if isinstance(default, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a float"
    if isinstance(default, (list, tuple)):
        return None if isinstance(value, (list, tuple)) else "a list, e.g. [1, 2]"
    if isinstance(default, Mapping):
        return None if isinstance(value, Mapping) else "a dict, e.g. {a: 1}"
    return None  # strings take anything


def _suggest(name: str, candidates: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(name, sorted({str(c) for c in candidates}), n=3, cutoff=0.6)


def find_override_problems(
    overrides: Mapping[str, Any],
    config: Mapping[str, Any],
    allowed: Iterable[str] = (),
    source: str = "the config",
) -> list[str]:
    """One message per override whose key is not in ``config`` (nor in ``allowed``) or whose value does not fit
    the type of the config value (see the module docstring for the rules).

    Example::

        >>> for p in find_override_problems({"epoch": 1, "batch_size": 2.5}, {"epochs": 6, "batch_size": 8}):
        ...     print(p)
        --epoch: no such key in the config; did you mean --epochs?
        --batch_size: expected an int (the config value is 8), got 2.5 (float)
    """
    allowed = set(allowed)
    problems = []
    for key, value in overrides.items():
        if key in allowed or key.startswith("_meta_"):
            continue
        parts = _ID_SEP.split(str(key))
        node: Any = config
        for depth, part in enumerate(parts):
            head = "#".join(parts[:depth])
            prefix = f"{head}#" if head else ""
            if isinstance(node, Mapping) and part in node:
                node = node[part]
                continue
            if isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
                node = node[int(part)]
                continue
            if isinstance(node, list):
                problems.append(f"--{key}: {head} is a list of {len(node)} item(s); {part!r} is not an index of it")
                break
            if not isinstance(node, Mapping):
                problems.append(f"--{key}: {head} is a single value ({node!r}), it has no key {part!r}")
                break
            candidates = set(node) | (allowed if depth == 0 else set())
            if "_target_" in node:
                target = _target_parameters(node)
                if target is None or target[1] or part in target[0] or part in _COMPONENT_KEYS:
                    break  # an argument of the target that the config leaves at its default: any value
                candidates |= target[0] | set(_COMPONENT_KEYS)
            where = f"under {head}" if head else "in " + source
            hint = _suggest(part, candidates)
            tail = "#".join(parts[depth + 1 :])
            did_you_mean = " or ".join(f"--{prefix}{h}{'#' + tail if tail else ''}" for h in hint)
            problems.append(f"--{key}: no such key {where}" + (f"; did you mean {did_you_mean}?" if hint else ""))
            break
        else:
            expected = _type_problem(node, value)
            if expected:
                problems.append(
                    f"--{key}: expected {expected} (the config value is {node!r}), got {value!r} "
                    f"({type(value).__name__})"
                )
    return problems


def _tracking_configs(tracking: Any) -> dict[str, Any]:
    """The config items that ``--tracking`` adds (``run_name``, ``tracking_uri``, ...), handlers excluded."""
    from monai.bundle import ConfigParser
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

    if isinstance(tracking, str) and tracking in DEFAULT_EXP_MGMT_SETTINGS:
        settings = DEFAULT_EXP_MGMT_SETTINGS[tracking]
    else:
        settings = ConfigParser.load_config_files(tracking)
    handlers = set(settings.get("handlers_id", {}))
    return {k: v for k, v in settings.get("configs", {}).items() if k not in handlers}


def check_cli_overrides(argv: Sequence[str] | None = None) -> None:
    """Stop the run (``SystemExit(2)`` after printing the reasons to stderr) when a ``--key value`` of a
    ``python -m monai.bundle run`` command line (``argv``, default ``sys.argv``) names no config key or has a value
    of the wrong type. Does nothing for any other program (MONAI Label, tests, benchmarks)."""
    from monai.bundle import ConfigParser

    argv = list(sys.argv if argv is None else argv)
    if not is_bundle_run(argv):
        return
    run_args = _run_arguments()
    cli = parse_cli_args(argv[2:], named=run_args)
    from_file: dict[str, Any] = {}
    if cli.get("args_file"):
        from_file = dict(ConfigParser.load_config_file(cli["args_file"]))
    given = {**from_file, **cli}
    if not given.get("config_file"):
        return  # MONAI itself reports the missing config file
    files = given["config_file"]
    config = dict(ConfigParser.load_config_files(files))
    if given.get("tracking"):
        for k, v in _tracking_configs(given["tracking"]).items():
            config.setdefault(k, v)
    shown = ", ".join(str(f) for f in ([files] if isinstance(files, (str, os.PathLike)) else files))
    problems = find_override_problems(
        {k: v for k, v in cli.items() if k not in run_args}, config, allowed=run_args, source=shown
    )
    in_file = {k: v for k, v in from_file.items() if k not in run_args and k not in cli}
    problems += [p + " (set in --args_file)" for p in find_override_problems(in_file, config, run_args, shown)]
    if problems:
        lines = "\n  ".join(problems)
        print(
            f"error: {len(problems)} invalid command-line override(s); nothing was run:\n  {lines}\n"
            f"(config file(s): {shown}; MONAI run options: {', '.join(sorted(run_args))})",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2)
