"""The CLI's one error path (issue 13, item 4): every way a command can end, mapped to one exit status.

Exit statuses: 0 success; 1 only "verification failed" (the command's own return value); 2 bad input — one
line ``admc: error: …`` through :func:`admc.core.errors.one_line` (also for command-line misuse: no usage
block, and for operating-system errors such as a full disk); 70 an unexpected internal error — one line
naming the exception and a file holding the traceback; 130 interrupted; a closed stdout
(``admc inspect B | head``) ends quietly with 141 (128 + SIGPIPE).

While a command runs, third-party loggers (torch's export and dynamo, onnx, onnxruntime, cvxpy) are capped
at ERROR and Python warnings from them are not shown, so their tracebacks never precede admc's line; solver
banners written to stdout (HiGHS through cvxpy) are diverted to stderr by :func:`banners_to_stderr`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator

from admc.core.errors import EXIT_BAD_INPUT, EXIT_INTERNAL_ERROR, AdmcError, one_line

QUIET_LOGGERS = ("torch", "torch._dynamo", "torch._export", "torch.export", "torch.fx", "torch._inductor",
                 "onnx", "onnxruntime", "onnxscript", "cvxpy", "highspy", "matplotlib", "PIL")
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class UsageError(AdmcError):
    """A command-line misuse found by the argument parser."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors raised as one-line ``UsageError`` instead of a usage block and exit."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _print_error(text: str) -> None:
    try:
        print(f"admc: error: {one_line(text)}", file=sys.stderr, flush=True)
    except (BrokenPipeError, OSError):
        pass


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Cap third-party loggers at ERROR and hide their warnings for the duration of a command."""
    saved = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    previous = os.environ.get("TORCH_LOGS")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        if previous is not None:
            os.environ["TORCH_LOGS"] = previous


@contextlib.contextmanager
def banners_to_stderr() -> Iterator[None]:
    """Send what native code prints to file descriptor 1 (e.g. a solver banner) to stderr instead."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 1)
        os.close(saved)


def save_traceback() -> str:
    """Write the current exception's traceback to a new file; return its path."""
    descriptor, path = tempfile.mkstemp(prefix="admc-traceback-", suffix=".txt")
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(traceback.format_exc())
    return path


def run(command: Callable[[], int]) -> int:
    """Run a command, mapping every outcome to the exit statuses of the module docstring."""
    try:
        with quiet_third_party():
            return command()
    except AdmcError as error:
        _print_error(str(error))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _print_error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``| head``): stop writing; point stdout at /dev/null so the interpreter's
        # final flush does not fail again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_BROKEN_PIPE
    except OSError as error:  # the environment (disk full, permissions changed mid-run): not a bug in admc
        where = f"{error.filename}: " if error.filename else ""
        _print_error(f"{where}{error.strerror or error}")
        return EXIT_BAD_INPUT
    except MemoryError:
        _print_error("ran out of memory; lower the sizes involved or raise --max-memory")
        return EXIT_BAD_INPUT
    except RecursionError:
        _print_error("input nested too deeply to process")
        return EXIT_BAD_INPUT
    except Exception as error:  # the one place an unexpected exception is caught: it is a bug in admc
        try:
            where = save_traceback()
        except OSError:
            where = "(could not be saved)"
        try:
            print(f"admc: internal error: {one_line(f'{type(error).__name__}: {error}')}; this is a bug in "
                  f"admc, traceback saved to {where}", file=sys.stderr, flush=True)
        except OSError:
            pass
        return EXIT_INTERNAL_ERROR
