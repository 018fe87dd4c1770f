"""`diffuserve bench <kind>`: every benchmark behind one command.

Each kind is a module of this package with `HELP`, `add_arguments(parser)` and `run(args)`.
A kind's module is imported only when that kind runs (or its help is shown), so `bench serve`,
a pure HTTP client, never imports torch. New kinds (e.g. quality) add one line to KINDS.
"""

from __future__ import annotations

import argparse
import importlib

HELP = "benchmarks, one kind per subcommand; `diffuserve bench KIND --help` lists its flags"

# kind -> (module, one-line summary)
KINDS = {
    "serve": ("diffuserve.bench.serve", "load generator against an OpenAI-compatible endpoint"),
    "offline": ("diffuserve.bench.offline", "offline engine benchmark against the reference sampler"),
    "http": ("diffuserve.bench.http", "HTTP server against the offline engine, same load"),
    "kernels": ("diffuserve.bench.kernels", "micro-benchmark of the denoising kernels"),
    "soak": ("diffuserve.bench.soak", "streaming clients for a while, some disconnecting; checks for leaks"),
    "quality": ("diffuserve.bench.quality", "task accuracy against tokens/s for every decoding mode"),
    "scoring": ("diffuserve.bench.scoring", "multiple-choice accuracy and questions/s (/v1/score)"),
}


class _KindParser(argparse.ArgumentParser):
    """A kind's parser whose flags are declared by its module, imported on first use."""

    def __init__(self, *args, module: str, **kwargs):
        super().__init__(*args, **kwargs)
        self._module_name = module
        self._declared = False

    def module(self):
        module = importlib.import_module(self._module_name)
        if not self._declared:
            self._declared = True
            self.description = module.HELP
            module.add_arguments(self)
        return module

    def parse_known_args(self, args=None, namespace=None):
        self.module()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.module()
        return super().format_help()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_kind", metavar="KIND", required=True, parser_class=_KindParser)
    for kind, (module, summary) in KINDS.items():
        sub.add_parser(kind, help=summary, module=module, prog=f"diffuserve bench {kind}")


def run(args: argparse.Namespace) -> int:
    return int(importlib.import_module(KINDS[args.bench_kind][0]).run(args) or 0)
