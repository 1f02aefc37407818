"""The ``eightyeightpay`` command line.

Exit codes: 0 success; 1 the library or the API reported an error (the message says which
and what to do); 2 the command line itself was wrong; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from eightyeightpay.errors import EightyEightPayError

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _print_table(rows: Sequence[tuple[str, object]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")


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
        remaining = token.remaining(time.monotonic())
        record = {
            "merchant_id": token.merchant_id,
            "fingerprint": token.fingerprint,
            "expires_in": round(remaining, 1),
            "session_id": token.session_id if args.reveal else f"{token.session_id[:5]}…",
            "access_token": token.access_token if args.reveal else f"…{token.fingerprint}",
        }
    if args.json:
        print(json.dumps(record))
    else:
        _print_table(list(record.items()))
    return EXIT_OK


def _cmd_request(args: argparse.Namespace) -> int:
    body = None
    if args.data is not None:
        try:
            body = json.loads(args.data)
        except ValueError as error:
            print(f"--data is not valid JSON: {error}", file=sys.stderr)
            return EXIT_USAGE
    with _manager_from_env(args) as manager:
        response = manager.request(args.method, args.path, json=body)
    if args.json:
        print(json.dumps({"status": response.status, "body": response.json}))
    else:
        print(f"HTTP {response.status}")
        print(json.dumps(response.data, indent=2) if response.data is not None else "")
    return EXIT_OK if response.ok else EXIT_ERROR


# --------------------------------------------------------------------------- doctor


def _cmd_doctor(args: argparse.Namespace) -> int:
    import os

    from eightyeightpay.adapters.doctor import run_doctor

    checks = run_doctor(
        os.environ,
        full=args.full,
        ca_bundle=args.ca_bundle,
        allow_http_loopback=args.allow_http_loopback,
    )
    if args.json:
        print(json.dumps([attrs.asdict(check) for check in checks]))
    else:
        marks = {"ok": "ok  ", "fail": "FAIL", "skipped": "--  "}
        width = max(len(check.name) for check in checks)
        for check in checks:
            print(f"  {marks[check.status]} {check.name.ljust(width)}  {check.detail}")
            if check.fix:
                print(f"       {' ' * width}  fix: {check.fix}")
    return EXIT_OK if all(check.ok for check in checks) else EXIT_ERROR


# --------------------------------------------------------------------------- sandbox


def _token_limit(text: str) -> tuple[int, float]:
    """``--token-limit LIMIT/SECONDS``, e.g. ``10/6``: at most LIMIT token requests per window."""
    limit, separator, window = text.partition("/")
    try:
        parsed = int(limit), float(window)
    except ValueError:
        parsed = (0, 0.0)
    if not separator or parsed[0] < 1 or not 0 < parsed[1] < float("inf"):
        raise argparse.ArgumentTypeError(
            f"--token-limit takes LIMIT/SECONDS with LIMIT >= 1 and SECONDS > 0 (e.g. 10/6), "
            f"not {text!r}"
        )
    return parsed


def _token_limits(limits: list[tuple[int, float]] | None) -> dict[str, Any]:
    from eightyeightpay.plugins.sandbox import RateLimit

    if not limits:
        return {}  # 88Pay's documented 10 a minute and 100 an hour
    return {"token_limits": tuple(RateLimit(limit, window) for limit, window in limits)}


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from eightyeightpay.plugins.sandbox import (
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        Sandbox,
        SandboxServer,
    )

    sandbox = Sandbox(token_lifetime=args.token_lifetime, **_token_limits(args.token_limit))
    server = SandboxServer(sandbox, host=args.host, port=args.port, tls=args.tls)
    server.start()
    try:
        info = {
            "url": server.url,
            "api_key": DEFAULT_API_KEY,
            "merchant_id": DEFAULT_MERCHANT_ID,
            "ca_file": str(server.certificates.ca_file) if server.certificates else None,
            "stats": f"{server.url}/_sandbox/stats",
        }
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            print("88Pay sandbox emulator running (Ctrl-C to stop)")
            _print_table([(k, v) for k, v in info.items() if v is not None])
            print("\nUse it with:")
            print(f"  export EIGHTY_EIGHT_PAY_BASE_URL={server.url}")
            print(f"  export EIGHTY_EIGHT_PAY_API_KEY={DEFAULT_API_KEY}")
            print(f"  export EIGHTY_EIGHT_PAY_MERCHANT_ID={DEFAULT_MERCHANT_ID}")
            if server.certificates:
                print(f"  export SSL_CERT_FILE={server.certificates.ca_file}")
            else:
                print("  (plain HTTP: pass --allow-http-loopback to `token` and `request`)")
            sys.stdout.flush()
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
        try:
            while not stop.wait(3600):
                pass
        finally:
            signal.signal(signal.SIGTERM, previous)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()  # also removes the throw-away CA
    return EXIT_OK


# --------------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from eightyeightpay.adapters.demo import run_demo

    return run_demo(threads=args.threads, tasks=args.tasks, say=print)


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``eightyeightpay`` command."""
    parser = argparse.ArgumentParser(
        prog="eightyeightpay",
        description="Access tokens for the 88Pay API: get, use, serve a sandbox, demonstrate.",
        epilog="Exit codes: 0 success, 1 an error reported by the library or API, 2 usage.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    token = sub.add_parser("token", help="get a token using EIGHTY_EIGHT_PAY_* variables")
    token.add_argument("--reveal", action="store_true", help="print the token and session id")
    token.add_argument("--json", action="store_true", help="machine-readable output")
    token.set_defaults(run=_cmd_token)

    request = sub.add_parser("request", help="make an authenticated API call")
    request.add_argument("method", help="HTTP method, e.g. POST")
    request.add_argument("path", help="path, e.g. /api/transactions/charges")
    request.add_argument("--data", help="JSON body")
    request.add_argument("--json", action="store_true", help="machine-readable output")
    request.set_defaults(run=_cmd_request)

    doctor = sub.add_parser(
        "doctor", help="run 88Pay's troubleshooting steps against the EIGHTY_EIGHT_PAY_* setup"
    )
    doctor.add_argument("--full", action="store_true", help="also wait for a token renewal")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(run=_cmd_doctor)
    for command in (token, request, doctor):
        command.add_argument("--ca-bundle", help="PEM file of CAs to trust instead of the system's")
        command.add_argument(
            "--allow-http-loopback",
            action="store_true",
            help="permit a plain http:// base URL on a loopback address (local emulators only)",
        )

    sandbox = sub.add_parser("sandbox", help="serve the 88Pay emulator on loopback")
    sandbox.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    sandbox.add_argument("--port", type=int, default=8088, help="port (0 picks a free one)")
    sandbox.add_argument("--tls", action="store_true", help="serve HTTPS with a throw-away CA")
    sandbox.add_argument("--token-lifetime", type=int, default=60, help="seconds a token lives")
    sandbox.add_argument(
        "--token-limit",
        action="append",
        type=_token_limit,
        metavar="LIMIT/SECONDS",
        help="token requests allowed per sliding window, repeatable (default 10/60 and "
        "100/3600, 88Pay's); a compressed run scales them with --token-lifetime, e.g. "
        "--token-lifetime 6 --token-limit 10/6 --token-limit 100/360",
    )
    sandbox.add_argument("--json", action="store_true", help="print the connection info as JSON")
    sandbox.set_defaults(run=_cmd_sandbox)

    demo = sub.add_parser("demo", help="show the library at work against the embedded emulator")
    demo.add_argument("--threads", type=int, default=256, help="concurrent threads")
    demo.add_argument("--tasks", type=int, default=10_000, help="concurrent async tasks")
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except EightyEightPayError as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
