"""Entry point of the ``neurolens`` CLI.

Subcommands are discovered from ``engine/cli/commands/*.py``: each module defines ``NAME``, ``HELP``, optional
``ORDER`` (position in ``--help``), ``add_arguments(parser)`` and ``run(args) -> int``.

Errors end in one line on stderr, never a traceback (``--debug`` shows it; the log file ``neurolens-cli.log`` in
``engine.resources.log_dir()`` keeps it): a ``NeuroLensError`` names the file and problem and exits 2 (3 for
``Cancelled``); a refusal of the operating system (disk full, read-only, no permission), running out of memory or any
unexpected exception exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import traceback

from engine._version import __version__
from engine.errors import Cancelled, NeuroLensError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 3
LOG_FILE = "neurolens-cli.log"
log = logging.getLogger("engine.cli")


def _command_modules():
    from engine.cli import commands

    mods = [importlib.import_module(f"engine.cli.commands.{m.name}") for m in pkgutil.iter_modules(commands.__path__)]
    mods = [m for m in mods if hasattr(m, "NAME") and hasattr(m, "run")]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (the usage is one ``--help`` away); exit status 2 as before."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message.splitlines()[0] if message else ''} "
                                  f"(see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="neurolens",
        description="NeuroLens: decode what a person saw from their fMRI (headless engine; the GUI is neurolens-app).",
    )
    p.add_argument("--version", action="version", version=f"neurolens {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        sp = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__


def _log_traceback(argv, e: BaseException) -> str | None:
    """Append the traceback to the CLI's log file; return the file's path (None when it cannot be written)."""
    from engine.resources import log_dir

    try:
        d = log_dir()
        d.mkdir(parents=True, exist_ok=True)
        path = d / LOG_FILE
        if path.is_file() and path.stat().st_size > 2_000_000:  # keep one previous file, like a rotating log
            path.replace(d / (LOG_FILE + ".1"))
        import datetime

        with open(path, "a", encoding="utf-8") as f:
            f.write(f"--- {datetime.datetime.now().isoformat(timespec='seconds')} neurolens {__version__} "
                    f"{' '.join(map(str, argv if argv is not None else sys.argv[1:]))}\n")
            f.write("".join(traceback.format_exception(type(e), e, e.__traceback__)))
        return str(path)
    except Exception:  # noqa: BLE001 - the log is a courtesy; the one-line message is what matters
        return None


def describe_unexpected(e: BaseException) -> str:
    """The one line for an exception no command turned into a ``NeuroLensError``."""
    from engine.atomic import _REFUSALS, output_error

    if isinstance(e, OSError) and e.errno in _REFUSALS:
        return str(output_error(e, e.filename or "output"))
    if isinstance(e, OSError) and e.filename:
        return f"{e.filename}: {e.strerror or _first_line(e)}"
    if isinstance(e, MemoryError):
        return "out of memory" + (f" ({_first_line(e)})" if str(e) else "") + "; use a smaller input or batch size"
    if isinstance(e, RecursionError):
        return "input nested too deeply (recursion limit reached)"
    return f"unexpected {type(e).__name__}: {_first_line(e)}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    debug = getattr(args, "debug", False)
    try:
        return int(args._run(args) or 0)
    except Cancelled as e:
        print(f"neurolens: {e}", file=sys.stderr)
        return EXIT_CANCELLED
    except NeuroLensError as e:
        if debug:
            traceback.print_exc()
        print(f"neurolens: error: {_first_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("neurolens: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as e:  # noqa: BLE001 - the last resort: one line, the traceback in the log and under --debug
        logged = _log_traceback(argv, e)
        if debug:
            traceback.print_exc()
        hint = f" (details in {logged})" if logged else ""
        print(f"neurolens: error: {describe_unexpected(e)}{hint}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
