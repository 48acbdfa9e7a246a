"""The `sts-agent` command line: parses arguments and hands off to one command module.

Exit codes are a contract: 0 healthy, 1 findings at warning or worse,
2 usage or configuration error; 141 when whoever reads stdout stopped reading
(`| head -1`), the status a tool killed by SIGPIPE has.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from agent import __version__
from agent import config_values as parsers
from agent.config import FIELDS, ConfigError, Loaded, as_toml_dict, build

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
#: 128 + SIGPIPE, what `set -o pipefail` scripts get from `cat` or `grep` in the same place.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit 2, like configuration errors."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_ERROR, f"sts-agent: error: {message} (see --help)\n")


def _held_to(parse: Callable[[str], float]) -> Callable[[str], float]:
    """argparse type for a duration flag, held to the settings' own rule."""

    def check(text: str) -> float:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{e}, got {text!r}") from None

    return check


_seconds = _held_to(parsers.seconds)
_interval = _held_to(parsers.interval)


def _add_settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    g = p.add_argument_group("settings (each also STS_AGENT_<NAME> or the config file)")
    for f in FIELDS:
        g.add_argument(f.flag, dest=f"set:{f.path}", metavar="VALUE", help=f"{f.help} [{f.env}]")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sts-agent", description=__doc__)
    p.add_argument("--version", action="version", version=f"sts-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("serve", help="run the daemon and serve /metrics")
    _add_settings_flags(s)

    c = sub.add_parser("check", help="run every probe once and print a report")
    _add_settings_flags(c)
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument(
        "--textfile",
        metavar="FILE",
        help="also write the metrics serve would export to FILE (*.prom, replaced atomically) "
        "for node_exporter's textfile collector",
    )

    d = sub.add_parser("demo", help="run against a built-in simulated VPC on loopback")
    d.add_argument("--once", action="store_true", help="one round, then exit with check's code")
    d.add_argument("--json", action="store_true", help="with --once: print JSON")
    d.add_argument(
        "--web.listen-address",
        dest="listen",
        default="127.0.0.1:9472",
        metavar="HOST:PORT",
        help="where the demo serves /metrics and the status page",
    )
    d.add_argument("--interval", type=_interval, default=5.0, help="seconds between rounds")
    d.add_argument(
        "--scenario",
        choices=("healthy", "private-dns-off", "global-sdk"),
        default="healthy",
        help="what the simulated VPC gets wrong",
    )

    cfg = sub.add_parser("config", help="configuration helpers")
    csub = cfg.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    cc = csub.add_parser("check", help="validate FILE and print the effective settings")
    cc.add_argument("file", metavar="FILE")
    cc.add_argument("--json", action="store_true")

    a = sub.add_parser("audit", help="offline audits")
    asub = a.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    ct = asub.add_parser("cloudtrail", help="summarise STS calls in CloudTrail logs")
    ct.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="files, directories, s3://BUCKET/PREFIX or logs://LOG_GROUP",
    )
    ct.add_argument("--json", action="store_true", help="print the summary as JSON")
    ct.add_argument("--region", help="region for the printed Logs Insights/Athena queries")
    ct.add_argument(
        "--since", metavar="DURATION", help="only events this recent (any source), e.g. 24h"
    )
    ct.add_argument("--athena-table", metavar="TABLE", help="run the summary in Athena on TABLE")
    ct.add_argument("--athena-workgroup", metavar="NAME", help="Athena workgroup")
    ct.add_argument("--athena-database", metavar="NAME", help="Athena database of TABLE")
    ct.add_argument("--athena-output", metavar="S3_URL", help="s3:// location for query results")
    ct.add_argument(
        "--athena-timeout", metavar="SECONDS", type=_seconds, default=300.0, help="wait at most"
    )
    return p


def load_settings(args: argparse.Namespace) -> Loaded:
    flags = {k[4:]: v for k, v in vars(args).items() if k.startswith("set:")}
    import os

    file = args.config or os.environ.get("STS_AGENT_CONFIG")
    return build(file=file, flags=flags)


def _config_check(args: argparse.Namespace) -> int:
    loaded = build(file=args.file)
    if loaded.settings.web_config_file:
        from agent.surfaces.webconfig import WebConfigError
        from agent.surfaces.webconfig_file import load_web_config

        try:
            load_web_config(loaded.settings.web_config_file)
        except WebConfigError as e:  # the same file serve would refuse, found before a restart
            print(f"sts-agent: config error: {e}", file=sys.stderr)
            return EXIT_ERROR
    doc = as_toml_dict(loaded.settings)
    if args.json:
        print(json.dumps({"settings": doc, "sources": loaded.sources}, indent=2))
        return EXIT_OK
    order = "flag > environment > file > discovered > default"  # README's precedence
    print(f"# {args.file}: OK. Effective settings ({order}):")
    for f in FIELDS:
        value = getattr(loaded.settings, f.attr)
        if f.attr == "expect":
            value = dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        src = loaded.sources.get(f.path, "default")
        print(f"{f.path} = {json.dumps(value)}  # {src}")
    return EXIT_OK


def _audit_cloudtrail(args: argparse.Namespace) -> int:
    from agent.audit.cloudtrail_athena import AthenaOptions
    from agent.audit.cloudtrail_cli import run_cloudtrail_audit

    athena = None
    if args.athena_table:
        athena = AthenaOptions(
            args.athena_table,
            args.athena_workgroup,
            args.athena_database,
            args.athena_output,
            timeout=max(1.0, args.athena_timeout),
        )
    elif not args.paths:
        print("sts-agent: audit: give at least one PATH, or --athena-table", file=sys.stderr)
        return EXIT_ERROR
    return run_cloudtrail_audit(
        args.paths, as_json=args.json, region=args.region, since=args.since, athena=athena
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a reader that closed stdout early ends it quietly, as with `cat`."""
    try:
        try:
            return _main(argv)
        finally:  # also after --help's SystemExit: what is still buffered fails here, not at exit
            if sys.stdout is not None:
                sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _discard_stdout() -> None:
    """Point fd 1 at /dev/null, so the interpreter's own flush at exit cannot fail again.

    The recipe of Python's signal docs ("Note on SIGPIPE"); without it, the
    output still buffered raises a second BrokenPipeError at shutdown.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "config":
            return _config_check(args)
        if args.command == "check":
            from agent.check import run_check

            settings = load_settings(args).settings
            return run_check(settings, as_json=args.json, textfile=args.textfile)
        if args.command == "serve":
            from agent.daemon import serve

            return serve(lambda: load_settings(args))
        if args.command == "demo":
            from agent.simulate.demo import run_demo

            return run_demo(args)
        if args.command == "audit":
            return _audit_cloudtrail(args)
    except ConfigError as e:
        print(f"sts-agent: config error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return EXIT_ERROR
