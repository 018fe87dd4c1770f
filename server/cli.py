"""`diffuserve` command line: one subcommand per module, imported only when used.

Each command module defines `HELP`, `add_arguments(parser)` and `run(args) -> int | None`,
so a command's heavy imports (torch, fastapi) cost nothing to the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

COMMANDS = {
    "serve": "diffuserve.server.serve_cmd",
    "generate": "diffuserve.engine.generate_cmd",
    "chat": "diffuserve.clients.chat_cmd",
    "eval": "diffuserve.clients.eval_cmd",
    "bench": "diffuserve.bench.cli",
    "train-builtin": "diffuserve.training.cli",
    "eval-tasks": "diffuserve.tasks.eval_cmd",
}

SUMMARY = {
    "serve": "run the OpenAI-compatible HTTP server",
    "generate": "generate text for one prompt (offline)",
    "chat": "interactive terminal chat against a server",
    "eval": "lm-evaluation-harness tasks against a server (/v1/score, completions)",
    "bench": "benchmarks: bench serve | offline | http | kernels",
    "train-builtin": "train the built-in model on its task corpus",
    "eval-tasks": "task accuracy of a model on the built-in suite (offline or --base-url)",
}


# Old command spellings, kept for one release: (argv prefix they stand for, version they go in).
DEPRECATED = {
    "bench-offline": (["bench", "offline"], "0.2"),
    "bench-kernels": (["bench", "kernels"], "0.2"),
}


def upgrade_argv(argv: list[str]) -> list[str]:
    """Rewrite a deprecated spelling to today's, with one line on stderr saying so:
    `bench-offline ...` -> `bench offline ...`, and `bench --url ...` (the load generator before
    `bench` had kinds) -> `bench serve --url ...`."""
    for i, arg in enumerate(argv):
        if arg in DEPRECATED:
            (new, version), old = DEPRECATED[arg], arg
        elif arg == "bench" and i + 1 < len(argv) and argv[i + 1].startswith("-") \
                and argv[i + 1] not in ("-h", "--help"):
            new, version, old = ["bench", "serve"], "0.2", f"bench {argv[i + 1]} ... (no kind)"
        elif arg in COMMANDS:
            return argv
        else:
            continue
        print(f"diffuserve: `{old}` is deprecated and goes in {version}; use `diffuserve {' '.join(new)}`",
              file=sys.stderr)
        return [*argv[:i], *new, *argv[i + 1 :]]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = upgrade_argv(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(prog="diffuserve", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in SUMMARY.items():
        sub.add_parser(name, help=summary, add_help=False)
    # Only the chosen command's module is imported; its parser replaces the placeholder.
    chosen = next((a for a in argv if a in COMMANDS), None)
    if chosen is None:
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    if chosen == "serve":
        # Until serve installs its own handlers, Ctrl-C ends the process like SIGTERM does (the
        # default action) instead of raising KeyboardInterrupt, which an import inside torch can
        # swallow, leaving a server that starts anyway and never exits.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    module = importlib.import_module(COMMANDS[chosen])
    sub.choices[chosen] = cmd_parser = argparse.ArgumentParser(
        prog=f"diffuserve {chosen}", description=module.HELP
    )
    module.add_arguments(cmd_parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
