"""Command line: argument parsing and dispatch only."""

from __future__ import annotations

import argparse
import os
import select
import sys
import threading
from pathlib import Path

import structlog

from replicator import __version__, config
from replicator.obs import logging as obs_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="replicator", description="Change-data-capture replication daemon")
    p.add_argument("--version", action="version", version=f"replicator {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="replicate until SIGTERM/SIGINT (or, with --once, until caught up)")
    run.add_argument("-c", "--config", type=Path, required=True, help="TOML config file")
    run.add_argument("--once", action="store_true", help="drain everything available, then exit")

    st = sub.add_parser("status", help="per table: state, changes applied, backlog, lag, why stopped")
    st.add_argument("-c", "--config", type=Path, required=True)
    st.add_argument("--json", action="store_true", help="machine-readable output")

    ck = sub.add_parser("check", help="validate the config and connectivity; say what is wrong")
    ck.add_argument("-c", "--config", type=Path, required=True)

    for action, text in (
        ("pause", "stop merging one table (capture and staging go on); see `tables`"),
        ("resume", "merge a paused table again, its backlog first"),
        ("resync", "reload one table from scratch (full load), then stream again"),
        ("retry", "a table its source stopped: read what stopped it again (after fixing the file or config)"),
        ("skip", "a table its source stopped: leave what stopped it in the quarantine and go on"),
    ):
        op = sub.add_parser(action, help=text)
        op.add_argument("-c", "--config", type=Path, required=True)
        op.add_argument("table", help="schema.table")
        op.add_argument("--reason", default="", required=action == "pause", help="shown in `tables`")

    tb = sub.add_parser("tables", help="per table: state (active, paused, resyncing, stopped), why, since")
    tb.add_argument("-c", "--config", type=Path, required=True)
    tb.add_argument("--json", action="store_true", help="machine-readable output")

    demo = sub.add_parser("demo", help="generate a sample DMS feed and replicate it into DuckDB (no servers)")
    demo.add_argument("--dir", type=Path, default=Path("demo"), help="working folder (default: ./demo)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--files", type=int, default=6, help="CDC files to add on a repeated run")

    ds = sub.add_parser("dms-settings", help="print [source.dms] from `aws dms describe-endpoints` JSON")
    ds.add_argument("file", type=Path, help="the JSON AWS prints (or one endpoint, or its S3Settings)")
    ds.add_argument("--endpoint", help="the endpoint identifier, when the file holds several S3 endpoints")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Logs go to stderr from the first line (results alone go to stdout); the config may change the level.
    obs_logging.configure("info", "auto")
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a reader that went away shows here, not as a traceback at interpreter exit
        return code
    except BrokenPipeError as exc:
        if not _stdout_reader_gone():
            return _failed(args.command, exc)  # a socket, not our output: a real failure
        # `replicator status | head`: the reader has what it wanted. Stop quietly, as Unix tools do, and keep
        # the interpreter's final flush from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the closed pipe
    except config.ConfigError as exc:
        print(f"replicator: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return _failed(args.command, exc)


def _failed(command: str, exc: BaseException) -> int:
    """Say each error once: the daemon's output is its log stream (ECS collects it), other commands say it in
    a line of their own."""
    if command == "run":
        structlog.get_logger("replicator").error("failed", error=f"{type(exc).__name__}: {exc}")
    else:
        print(f"replicator: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe or socket whose reader has closed it (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        obs_logging.configure("warning", "auto")
        from replicator.demo import demo

        return demo(args.dir, seed=args.seed, files=args.files)
    if args.command == "dms-settings":
        from replicator.sources.dms import print_section

        return print_section(args.file, args.endpoint)
    cfg = config.load(args.config)
    problems = config.validate(cfg)
    if problems:
        raise config.ConfigError("; ".join(problems))
    obs_logging.configure(cfg.log.level, cfg.log.format)
    from replicator.ops import commands

    if args.command == "run":
        return commands.run(cfg, once=args.once, stop=threading.Event())
    if args.command == "status":
        return commands.status(cfg, as_json=args.json)
    if args.command == "check":
        from replicator.ops.check import check

        return check(cfg)
    if args.command in ("pause", "resume", "resync", "retry", "skip"):
        return commands.table_action(cfg, args.command, args.table, reason=args.reason)
    if args.command == "tables":
        return commands.tables(cfg, as_json=args.json)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
