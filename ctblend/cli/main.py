"""The parser of the ``ctblend`` command, ``--config`` option defaults, and the entry point."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from pathlib import Path

from . import common, demo, info, recon, sample, simulate, train

#: Commands whose options live in their own module: ``add_arguments(parser)`` and ``run(args)``.
DELEGATED = {
    "bench": (
        "ctblend.bench",
        "benchmark tables (protocol × method × volume)",
        "Benchmark tables: protocol × method × volume, resumable (see docs/results.md).",
    ),
    "train-fbp-unet": (
        "ctblend.baselines.fbp_unet",
        "train the FBP-UNet baseline for one protocol",
        "Train an FBP-UNet (FBP slice → true slice) for one protocol.",
    ),
}


#: Every command in ``ctblend --help`` order: its module (``HELP``, ``DESCRIPTION``, ``EPILOG``,
#: ``add_arguments(parser)``, ``run(args)``), or None for a delegated one.
COMMANDS = {
    "demo": demo,
    "simulate": simulate,
    "recon": recon,
    "train": train,
    "sample": sample,
    "bench": None,
    "train-fbp-unet": None,
    "info": info,
}


def _run_delegated(command: str, argv: list[str]) -> int:
    module_name, _, description = DELEGATED[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ValueError(
            f"the {command} command needs {module_name}, which this installation lacks"
        ) from None
    parser = common.Parser(prog=f"ctblend {command}", description=description)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)) or 0)


def build_parser() -> argparse.ArgumentParser:
    """The ``ctblend`` argument parser (``bench``'s own options come from ``ctblend.bench``)."""
    parser = common.Parser(
        prog="ctblend",
        description="Sparse-view and limited-angle 3D CT reconstruction with DiffusionBlend++.",
        epilog="Run 'ctblend COMMAND --help' for the options of a command. Docs: docs/index.md",
    )
    from importlib.metadata import PackageNotFoundError, version

    try:
        parser.add_argument("--version", action="version", version=f"ctblend {version('ctblend')}")
    except PackageNotFoundError:  # running from a source tree without installation
        pass
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=common.Parser
    )
    parser.set_defaults(subparsers=sub.choices)
    for command, module in COMMANDS.items():
        if module is None:  # parsed by _run_delegated
            sub.add_parser(command, help=DELEGATED[command][1], add_help=False)
            continue
        description = getattr(module, "DESCRIPTION", None)
        epilog = getattr(module, "EPILOG", None)
        p = sub.add_parser(command, help=module.HELP, description=description, epilog=epilog)
        module.add_arguments(p)
        p.set_defaults(handler=module.run)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; a ``--config FILE.yaml`` of option defaults is applied before a re-parse."""
    import yaml

    args = _parse_items(parser, argv)
    path = getattr(args, "config", None)
    if args.command == "train" or not path:
        return args
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"--config {path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of option names to values")
    sub = args.subparsers[args.command]
    dests = {a.dest for a in sub._actions if a.dest not in ("help", "config", "items")}  # noqa: SLF001
    defaults = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest == "options" and args.command == "recon" and isinstance(value, dict):
            defaults["options"] = value
        elif dest in dests:
            defaults[dest] = value
        else:
            raise ValueError(
                f"--config {path}: unknown option {key!r} for 'ctblend {args.command}'; "
                f"expected some of {', '.join(sorted(dests))}"
            )
    sub.set_defaults(**defaults)
    return _parse_items(parser, argv)


def _parse_items(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse with ``KEY=VALUE`` / input items allowed anywhere (after options too)."""
    args, extra = parser.parse_known_args(argv)
    sub = args.subparsers[args.command]
    unknown = [e for e in extra if e.startswith("-") or not hasattr(args, "items")]
    if unknown:
        sub.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.items = [*args.items, *extra]
    return args


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"ctblend: warning: {common.one_line(Warning(str(message)))}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ctblend`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            if argv and argv[0] in DELEGATED:
                return _run_delegated(argv[0], argv[1:])
            args = _parse(build_parser(), argv)
            return int(args.handler(args) or 0)
    except (ValueError, OSError) as exc:  # OSError: missing files, outputs the system refuses
        print(f"ctblend: error: {common.one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctblend: interrupted", file=sys.stderr)
        return 130
