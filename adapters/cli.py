"""The ``eightyeightpay`` command line.

Every mistake ends in one line ``error: ...`` on stderr that names the command's own flags
(or ``EIGHTY_EIGHT_PAY_*`` variables) and the fix, and in an exit code of
:data:`EXIT_CODES`, which ``docs/cli.md`` repeats (a test keeps the two equal).
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_loading(_signum: int, _frame: object) -> None:
    os._exit(130)  # nothing is printed and nothing is begun yet: leave at once, quietly


# Ctrl-C while the rest of this module loads (and until main() is running) ends the command
# with 130 and no traceback. Only in the console script (argv[0] is the command) or under
# `python -m`, and only where SIGINT is at Python's default: an ignored SIGINT stays
# ignored, and a program that imports this module keeps its own handling.
if __name__ == "__main__" or os.path.basename(sys.argv[0] if sys.argv else "") == "eightyeightpay":
    try:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _interrupted_while_loading)
    except ValueError:  # imported in a thread other than the main one
        pass

import _thread  # noqa: E402 - after the handler above, which must come first
import argparse  # noqa: E402
import contextlib  # noqa: E402
import errno  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import threading  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any, NoReturn  # noqa: E402

from eightyeightpay.api import ApiResponse, check_call  # noqa: E402
from eightyeightpay.credentials import _is_loopback  # noqa: E402
from eightyeightpay.errors import (  # noqa: E402
    ApiError,
    ConfigurationError,
    EightyEightPayError,
    InsecureTransport,
    MalformedCredentials,
    RateLimited,
    TLSError,
)

from .config import BASE_URL_VARIABLE, STORE_VARIABLE  # noqa: E402

__all__ = ["EXIT_CODES", "build_parser", "cli_message", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_CLOSED_PIPE = 141

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_ERROR: "an error reported by the library, 88Pay or this machine",
    EXIT_USAGE: "the command line is wrong",
    EXIT_INTERRUPTED: "interrupted",
    EXIT_CLOSED_PIPE: "the reader of the output went away",
}
"""Exit code -> when the command exits with it."""


class _OutputFailed(Exception):
    """Writing to stdout or stderr failed (a closed pipe, a full disk); carries the OSError."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class CommandError(Exception):
    """A mistake the command found itself; ``main`` prints ``error: <message>``."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- what it says

_ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"

_EACH_COMMAND = (
    f"each token, request and doctor command is a new process: without {STORE_VARIABLE} each "
    "requests its own token, and these count with your application's."
)

_CLI_WORDING: tuple[tuple[type[EightyEightPayError], str, str], ...] = (
    (InsecureTransport, "Use an https:// URL.", f"Set {BASE_URL_VARIABLE} to an https:// URL."),
    (InsecureTransport, "pass allow_http_loopback=True", "pass --allow-http-loopback"),
    (
        InsecureTransport,
        "(or environment='production'/'sandbox')",
        f"(or unset {BASE_URL_VARIABLE}: the key's prefix picks one)",
    ),
    (TLSError, "(ca_bundle= or SSL_CERT_FILE)", "(--ca-bundle FILE or SSL_CERT_FILE)"),
    (
        MalformedCredentials,
        ", or pass them as arguments.",
        "; `eightyeightpay doctor` then checks the whole setup.",
    ),
    (
        RateLimited,
        "Retry after retry_after seconds, or give the call a deadline long enough to wait.",
        "Run the command again after that.",
    ),
    (
        RateLimited,
        "share one token between processes (a fleet store) instead of requesting one per process.",
        f"{_EACH_COMMAND} Wait that long before the next command; to share one token "
        f"between commands (and with your application), set {STORE_VARIABLE}=redis and "
        "EIGHTY_EIGHT_PAY_REDIS_URL (docs/cli.md, 'One token per command').",
    ),
)
"""Where a library message names a Python argument, what the command line says instead."""


def cli_message(error: EightyEightPayError) -> str:
    """``error``'s message on one line, naming the command's flags instead of Python arguments.

    The library's messages speak to Python callers (``allow_http_loopback=True``,
    ``ca_bundle=``); the command line has ``--allow-http-loopback`` and ``--ca-bundle``.
    """
    text = error.message
    for kind, python, cli in _CLI_WORDING:
        if isinstance(error, kind):
            text = text.replace(python, cli)
    return " ".join(text.split())


def _say(text: str = "", *, err: bool = False) -> None:
    """Print a line that survives any terminal encoding (``...`` where ``…`` cannot show)."""
    stream = sys.stderr if err else sys.stdout
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        text = text.replace(_ELLIPSIS, "...").encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:
        pass
    try:
        print(text, file=stream)
    except OSError as error:
        raise _OutputFailed(error) from None


def _flush() -> None:
    """Send what was printed so far on its way (a row a user watches, a line a script waits for)."""
    try:
        sys.stdout.flush()
    except OSError as error:
        raise _OutputFailed(error) from None


def _survive_any_encoding() -> None:
    # A stray non-ASCII character (from a server message, say) must not crash the output of
    # an ASCII-only terminal: it is escaped instead.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _print_table(rows: Sequence[tuple[str, object]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        _say(f"  {name.ljust(width)}  {value}")


# --------------------------------------------------------------------------- argument types


def _whole(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number from {low} to {high}; give one in that range"
            )
        return value

    return parse


CA_BUNDLE_FIX = (
    "give --ca-bundle a PEM file of CA certificates (-----BEGIN CERTIFICATE-----), or leave "
    "it out to trust the system's CAs (or SSL_CERT_FILE)"
)


def _ca_bundle(path: str) -> str:
    from eightyeightpay.plugins.tls import ca_bundle_problem  # TLS loads only when asked

    problem = ca_bundle_problem(path)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{problem}; {CA_BUNDLE_FIX}")
    return path


def _method(text: str) -> str:
    try:
        return check_call(text, "/")
    except ConfigurationError as error:
        raise argparse.ArgumentTypeError(f"{error} Give one such as POST or GET.") from None


def _path(text: str) -> str:
    try:
        check_call("GET", text)
    except ConfigurationError as error:
        raise argparse.ArgumentTypeError(
            f"{error} Quote it for your shell when it holds '?' or '&'."
        ) from None
    return text


def _json_body(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({error}); quote the whole body for your shell, "
            """e.g. --data '{"amount": 25000}'"""
        ) from None


def _loopback_host(text: str) -> str:
    if not _is_loopback(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a loopback address; the sandbox serves this machine only "
            "(give 127.0.0.1, ::1 or localhost): its test key and tokens are public, and the "
            "library refuses plain HTTP beyond loopback"
        )
    return text


def _rate_limit(flag: str) -> Callable[[str], tuple[int, float]]:
    """The parser of ``flag LIMIT/SECONDS``, e.g. ``10/6``: at most LIMIT per sliding window."""

    def parse(text: str) -> tuple[int, float]:
        limit, separator, window = text.partition("/")
        try:
            parsed = int(limit), float(window)
        except ValueError:
            parsed = (0, 0.0)
        if not separator or parsed[0] < 1 or not 0 < parsed[1] < float("inf"):
            raise argparse.ArgumentTypeError(
                f"{flag} takes LIMIT/SECONDS with LIMIT >= 1 and SECONDS > 0 (e.g. 10/6), "
                f"not {text!r}"
            )
        return parsed

    return parse


# --------------------------------------------------------------------------- token / request


def _manager_from_env(args: argparse.Namespace) -> Any:
    from eightyeightpay.adapters.sync import TokenManager

    options: dict[str, Any] = {"allow_http_loopback": args.allow_http_loopback}
    if args.ca_bundle:
        options["ca_bundle"] = args.ca_bundle
    return TokenManager.from_env(**options)


def _cmd_token(args: argparse.Namespace) -> int:
    with _manager_from_env(args) as manager:
        token = manager.get_token()
        now = manager.clock()
        stats = manager.stats()
    # Two instants of one token, read at one time: when 88Pay's token expires, and until when
    # this library hands it out (a safety margin before expiry; stats' "token N s left").
    expires_in = round(token.remaining(now), 1)
    usable_for = round(max(0.0, token.usable_until - now), 1)
    record = {
        "merchant_id": token.merchant_id,
        "fingerprint": token.fingerprint,
        "expires_in": expires_in,
        "usable_for": usable_for,
        "session_id": token.session_id if args.reveal else f"{token.session_id[:5]}{_ELLIPSIS}",
        "access_token": token.access_token if args.reveal else f"{_ELLIPSIS}{token.fingerprint}",
    }
    if args.json:
        _say(json.dumps({**record, "stats": stats.as_dict()}))
    else:
        margin = expires_in - usable_for
        _print_table(
            [
                ("merchant_id", token.merchant_id),
                ("fingerprint", token.fingerprint),
                ("expires_in", f"{expires_in:.0f} s: when 88Pay's token expires"),
                (
                    "usable_for",
                    f"{usable_for:.0f} s: handed out until {margin:.0f} s before it expires, "
                    "then renewed (the stats line's 'token ... s left')",
                ),
                ("session_id", record["session_id"]),
                ("access_token", record["access_token"]),
                ("stats", stats.summary()),
            ]
        )
    return EXIT_OK


def _cmd_request(args: argparse.Namespace) -> int:
    with _manager_from_env(args) as manager:
        try:
            response = manager.request(args.method, args.path, json=args.data)
        except ApiError as error:
            if not isinstance(error.response, ApiResponse):
                raise  # refused before sending: the usual one-line error
            response = error.response  # an error answer: shown as it came
    if args.json:
        _say(json.dumps({"status": response.status, "body": response.json}))
    else:
        _say(f"HTTP {response.status}")
        # The envelope's data; for an error answer (no data) the whole envelope or raw body.
        shown = response.data if response.data is not None else response.json
        if shown is not None:
            _say(json.dumps(shown, indent=2))
        else:
            _say(response.body.decode("utf-8", "replace"))
    if response.ok:
        return EXIT_OK
    said = f": {' '.join(response.message.split())}" if response.message else ""
    if response.status >= 500:
        fix = "a problem at 88Pay or a gateway; try again later"
    elif response.status == 429:
        fix = "88Pay's rate limit; wait before the next call"
    elif response.status in (401, 403):
        fix = (
            "check the key and merchant id (`eightyeightpay doctor`), the merchant's KYC "
            "and this host's place on its IP allow-list"
        )
    else:
        fix = "fix the request's METHOD, PATH or --data as the message says"
    raise CommandError(
        f"88Pay answered HTTP {response.status}{said} (the answer is on stdout); {fix}"
    )


# --------------------------------------------------------------------------- doctor


def _cmd_doctor(args: argparse.Namespace) -> int:
    from eightyeightpay.adapters.doctor import CHECKLIST, Check, run_doctor

    marks = {"ok": "ok  ", "fail": "FAIL", "skipped": "--  "}
    width = max(len(name) for name in CHECKLIST)

    def show(check: Check) -> None:
        # Each row as its check ends: a user sees progress, and Ctrl-C keeps what is shown.
        _say(f"  {marks[check.status]} {check.name.ljust(width)}  {check.detail}")
        if check.fix:
            _say(f"       {' ' * width}  fix: {check.fix}")
        _flush()

    checks = run_doctor(
        os.environ,
        full=args.full,
        ca_bundle=args.ca_bundle,
        allow_http_loopback=args.allow_http_loopback,
        on_check=None if args.json else show,
    )
    if args.json:
        import attrs

        _say(json.dumps([attrs.asdict(check) for check in checks]))
    return EXIT_OK if all(check.ok for check in checks) else EXIT_ERROR


# --------------------------------------------------------------------------- sandbox


def _limits(
    token: list[tuple[int, float]] | None, api: list[tuple[int, float]] | None
) -> dict[str, Any]:
    """The emulator's limits from the flags; a flag not given keeps 88Pay's documented ones."""
    from eightyeightpay.plugins.sandbox import RateLimit

    chosen: dict[str, Any] = {}
    for name, limits in (("token_limits", token), ("api_limits", api)):
        if limits:
            chosen[name] = tuple(RateLimit(limit, window) for limit, window in limits)
    return chosen


def _cannot_listen(error: OSError, host: str, port: int) -> CommandError:
    where = f"{host}:{port}"
    if error.errno == errno.EADDRINUSE:
        return CommandError(
            f"{where} is already in use; stop what listens there, or pick another port with "
            "--port (--port 0 picks a free one)"
        )
    if error.errno == errno.EACCES:
        return CommandError(
            f"no permission to listen on {where}; use a port above 1023 with --port "
            "(--port 0 picks a free one)"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return CommandError(
            f"{host} is not an address of this machine; give --host 127.0.0.1 (or ::1 where "
            "IPv6 is on)"
        )
    return CommandError(
        f"the sandbox could not start on {where} ({error.strerror or type(error).__name__}); "
        "try another --port, or --port 0"
    )


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from eightyeightpay.plugins.sandbox import (
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        Sandbox,
        SandboxServer,
    )

    sandbox = Sandbox(
        token_lifetime=args.token_lifetime, **_limits(args.token_limit, args.api_limit)
    )
    server = SandboxServer(sandbox, host=args.host, port=args.port, tls=args.tls)
    try:
        server.start()
    except OSError as error:
        raise _cannot_listen(error, args.host, args.port) from None
    try:
        info = {
            "url": server.url,
            "api_key": DEFAULT_API_KEY,
            "merchant_id": DEFAULT_MERCHANT_ID,
            "ca_file": str(server.certificates.ca_file) if server.certificates else None,
            "stats": f"{server.url}/_sandbox/stats",
        }
        if args.json:
            _say(json.dumps(info))
        else:
            _say("88Pay sandbox emulator running (Ctrl-C to stop)")
            _print_table([(k, v) for k, v in info.items() if v is not None])
            _say("\nUse it with:")
            _say(f"  export EIGHTY_EIGHT_PAY_BASE_URL={server.url}")
            _say(f"  export EIGHTY_EIGHT_PAY_API_KEY={DEFAULT_API_KEY}")
            _say(f"  export EIGHTY_EIGHT_PAY_MERCHANT_ID={DEFAULT_MERCHANT_ID}")
            if server.certificates:
                _say(f"  export SSL_CERT_FILE={server.certificates.ca_file}")
            else:
                _say("  (plain HTTP: pass --allow-http-loopback to `token` and `request`)")
        _flush()
        # SIGTERM (a service manager, a test) stops it cleanly with 0; Ctrl-C raises
        # KeyboardInterrupt, which main() turns into 130.
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
        try:
            while not stop.wait(3600):
                pass
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        server.stop()  # also removes the throw-away CA
    return EXIT_OK


# --------------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from eightyeightpay.adapters.demo import run_demo

    # A task trio created but never started (Ctrl-C cancelled its nursery first) warns when
    # it is dropped, which can be before main() knows of the Ctrl-C: not worth a warning.
    warnings.filterwarnings(
        "ignore", "coroutine .* was never awaited", RuntimeWarning, module=r"trio\."
    )
    return run_demo(threads=args.threads, tasks=args.tasks, say=_say)


# --------------------------------------------------------------------------- parser


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default, unless it is off or unset."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        shown = action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
        if shown and "%(default)" not in text and "(default" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """Ends a usage mistake in one line ``error: ...`` and exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message.rstrip('.')} (see `{self.prog} --help`)\n")


def _add_connection_flags(command: argparse.ArgumentParser, *, check_bundle: bool) -> None:
    command.add_argument(
        "--ca-bundle",
        metavar="FILE",
        # doctor reports a bad bundle in its TLS row instead of refusing to run
        type=_ca_bundle if check_bundle else str,
        help="PEM file of CA certificates to trust instead of the system's",
    )
    command.add_argument(
        "--allow-http-loopback",
        action="store_true",
        help="permit a plain http:// base URL on a loopback address (local emulators only)",
    )


def _version() -> str:
    from eightyeightpay import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``eightyeightpay`` command."""
    parser = _Parser(
        prog="eightyeightpay",
        description="Access tokens for the 88Pay API: get one, use it, check the setup, serve "
        "a sandbox, demonstrate.",
        epilog="Exit codes: "
        + ", ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())
        + " (docs/cli.md lists the cases). The variables EIGHTY_EIGHT_PAY_API_KEY, "
        "EIGHTY_EIGHT_PAY_MERCHANT_ID and (optionally) EIGHTY_EIGHT_PAY_BASE_URL configure "
        f"token, request and doctor; with {STORE_VARIABLE} (e.g. redis, and "
        "EIGHTY_EIGHT_PAY_REDIS_URL) they share one token instead of each requesting its own.",
    )
    verbose_help = "log at DEBUG to stderr (secrets are never logged)"
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    parser.add_argument("--version", action="version", version=f"eightyeightpay {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        made = sub.add_parser(name, help=summary, description=f"{summary}. {description}")
        # -v also after the command; SUPPRESS keeps a -v given before it
        made.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help
        )
        made.set_defaults(command_parser=made)
        return made

    token = command(
        "token",
        "Get a token using the EIGHTY_EIGHT_PAY_* variables",
        "Prints its merchant, fingerprint and seconds left, with the token and session id masked.",
    )
    token.add_argument("--reveal", action="store_true", help="print the token and session id")
    token.add_argument("--json", action="store_true", help="print one JSON object")
    _add_connection_flags(token, check_bundle=True)
    token.set_defaults(run=_cmd_token)

    request = command(
        "request",
        "Make one authenticated call to the 88Pay API",
        "Prints the HTTP status and the answer's data; exits 1 on a non-2xx answer.",
    )
    request.add_argument("method", metavar="METHOD", type=_method, help="HTTP method, e.g. POST")
    request.add_argument(
        "path", metavar="PATH", type=_path, help="path from the base URL, e.g. /api/balance"
    )
    request.add_argument("--data", metavar="JSON", type=_json_body, help="the JSON body")
    request.add_argument("--json", action="store_true", help="print {status, body} as JSON")
    _add_connection_flags(request, check_bundle=True)
    request.set_defaults(run=_cmd_request)

    doctor = command(
        "doctor",
        "Run 88Pay's troubleshooting steps against the EIGHTY_EIGHT_PAY_* setup",
        "Prints every check with ok, FAIL (and a fix) or -- (not run); exits 1 if one failed.",
    )
    doctor.add_argument("--full", action="store_true", help="also wait for a token renewal")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    _add_connection_flags(doctor, check_bundle=False)
    doctor.set_defaults(run=_cmd_doctor)

    sandbox = command(
        "sandbox",
        "Serve the 88Pay emulator on loopback",
        "Runs until Ctrl-C (exit 130) or SIGTERM (exit 0) and prints how to use it.",
    )
    sandbox.add_argument(
        "--host", type=_loopback_host, default="127.0.0.1", help="loopback address to bind"
    )
    sandbox.add_argument(
        "--port", type=_whole(0, 65535), default=8088, help="port (0 picks a free one)"
    )
    sandbox.add_argument("--tls", action="store_true", help="serve HTTPS with a throw-away CA")
    sandbox.add_argument(
        "--token-lifetime",
        type=_whole(1, 86_400),
        default=60,
        metavar="SECONDS",
        help="seconds a token lives",
    )
    sandbox.add_argument(
        "--token-limit",
        action="append",
        type=_rate_limit("--token-limit"),
        metavar="LIMIT/SECONDS",
        help="token requests allowed per sliding window, repeatable (default 10/60 and "
        "100/3600, 88Pay's); a compressed run scales them and --api-limit with "
        "--token-lifetime, e.g. --token-lifetime 6 --token-limit 10/6 --token-limit 100/360 "
        "--api-limit 60/6 --api-limit 1000/360 (Policy.compressed(10))",
    )
    sandbox.add_argument(
        "--api-limit",
        action="append",
        type=_rate_limit("--api-limit"),
        metavar="LIMIT/SECONDS",
        help="API calls (charges, balances) allowed per sliding window, repeatable (default "
        "60/60 and 1000/3600, 88Pay's); raise it to load-test your own service, e.g. "
        "--api-limit 100000/60",
    )
    sandbox.add_argument("--json", action="store_true", help="print the connection info as JSON")
    sandbox.set_defaults(run=_cmd_sandbox)

    demo = command(
        "demo",
        "Show the library at work against the embedded emulator",
        "Needs no configuration and no network.",
    )
    demo.add_argument("--threads", type=_whole(1, 1024), default=256, help="threads in the crowd")
    demo.add_argument(
        "--tasks", type=_whole(1, 100_000), default=10_000, help="async tasks in the crowd"
    )
    demo.set_defaults(run=_cmd_demo)
    return parser


# --------------------------------------------------------------------------- main


def _silence_stdout() -> None:
    # Output that cannot be written must not fail once more when Python flushes at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def _output_failed(error: OSError) -> int:
    _silence_stdout()
    if isinstance(error, BrokenPipeError):
        # The reader went away (`| head -1`): what it wanted it has; end quietly, as a
        # command killed by SIGPIPE would (128 + 13).
        return EXIT_CLOSED_PIPE
    with contextlib.suppress(_OutputFailed):
        _say(
            f"error: could not write the output ({error.strerror or type(error).__name__}); "
            "send it to a writable file or pipe",
            err=True,
        )
    return EXIT_ERROR


def _deliver_again(unraisable: Any) -> None:
    """``sys.unraisablehook`` while a command runs: a lost Ctrl-C is delivered again.

    Ctrl-C that lands where Python cannot raise it (a weakref callback, a finalizer) would
    be printed as "Exception ignored" and lost, and the command would run on; delivered
    again, it ends the command (130). Delivered from another thread a moment later: raised
    at once, it would land in this hook, where it is lost too.
    """
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        again = threading.Timer(REDELIVER_AFTER, _thread.interrupt_main)
        again.daemon = True
        _redeliveries.append(again)
        again.start()
        return
    sys.__unraisablehook__(unraisable)


_redeliveries: list[threading.Timer] = []
"""Lost Ctrl-Cs to deliver again; those still waiting when the command ends are dropped."""


REDELIVER_AFTER = 0.05
"""Seconds after which a lost Ctrl-C is delivered again (see :func:`_deliver_again`)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns its exit code (``EXIT_CODES``, docs/cli.md), never raises."""
    hook = sys.unraisablehook
    try:
        if signal.getsignal(signal.SIGINT) is _interrupted_while_loading:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: 130 from here on
        sys.unraisablehook = _deliver_again
        _survive_any_encoding()
        code = _run(argv)
        _flush()
    except _OutputFailed as failed:
        return _output_failed(failed.error)
    except KeyboardInterrupt:
        return _interrupted()
    except BaseExceptionGroup as group:  # inside a trio nursery (the demo)
        lost = group.subgroup(lambda error: isinstance(error, _OutputFailed))
        if lost is None:
            raise
        first: BaseException = lost
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        assert isinstance(first, _OutputFailed)
        return _output_failed(first.error)
    finally:
        sys.unraisablehook = hook
        while _redeliveries:  # the command ended first: nothing is left to interrupt
            _redeliveries.pop().cancel()
    return code


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args, leftovers = parser.parse_known_args(argv)
        if leftovers:  # told by the command's own parser: its usage line, its --help
            command: argparse.ArgumentParser = getattr(args, "command_parser", parser)
            command.error(f"unrecognized arguments: {' '.join(leftovers)}")
    except SystemExit as done:  # --help, or a usage mistake already told
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except CommandError as error:
        _say(f"error: {error}", err=True)
        return error.code
    except EightyEightPayError as error:
        _say(f"error: {type(error).__name__}: {cli_message(error)}", err=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return _interrupted()
    except BaseExceptionGroup as group:  # Ctrl-C inside a trio nursery (the demo)
        if group.subgroup(lambda error: isinstance(error, KeyboardInterrupt)) is None:
            raise
        return _interrupted()


def _interrupted() -> int:
    # Tasks that Ctrl-C stopped before they started are expected; no warning about them.
    warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
    return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
