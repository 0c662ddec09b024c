"""Every ``headstart`` command, named once: its handler, its options, and whether it runs data-parallel.

:func:`build_parser` builds the command line from this table and :mod:`.launch` reads it to
know which commands may run under torchrun. The handlers import what is heavy themselves,
so reading the table loads no PyTorch (``headstart predict MODEL.onnx`` never does).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from .._console import Console
from ..errors import ExitStatus
from .parser import (add_backbones, add_cache, add_compare, add_evaluate, add_export, add_inspect, add_launch,
                     add_predict, add_report, add_serve, add_train, main_parser)
from .commands import (backbones_command, cache_command, compare_command, export_command, inspect_command,
                       report_command, serve_command)
from .embed import (add_embed, add_index, add_similar, add_suggest, embed_command, index_command, similar_command,
                    suggest_command)
from .evaluate import evaluate_command
from .predict import predict_command
from .train import train_command

__all__ = ["Command", "COMMANDS", "build_parser"]


@dataclass(frozen=True)
class Command:
    """One command: what runs it, and what adds its parser (given the command's name)."""

    handler: Callable[[argparse.Namespace, Console], ExitStatus]
    options: Callable[[argparse._SubParsersAction, str], argparse.ArgumentParser]
    data_parallel: bool = False  # runs on several processes, under torchrun or with --nproc/--devices


# In the order ``headstart --help`` lists them.
COMMANDS: dict[str, Command] = {
    "train": Command(train_command, add_train, data_parallel=True),
    "predict": Command(predict_command, add_predict, data_parallel=True),
    "evaluate": Command(evaluate_command, add_evaluate, data_parallel=True),
    "inspect": Command(inspect_command, add_inspect),
    "backbones": Command(backbones_command, add_backbones),
    "report": Command(report_command, add_report),
    "export": Command(export_command, add_export),
    "serve": Command(serve_command, add_serve),
    "compare": Command(compare_command, add_compare),
    "cache": Command(cache_command, add_cache),
    "embed": Command(embed_command, add_embed),
    "index": Command(index_command, add_index),
    "similar": Command(similar_command, add_similar),
    "suggest": Command(suggest_command, add_suggest),
}


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every command of :data:`COMMANDS`, the data-parallel ones with
    ``--nproc`` and ``--devices``."""
    parser, commands = main_parser()
    for name, command in COMMANDS.items():
        options = command.options(commands, name)
        if command.data_parallel:
            add_launch(options)
    return parser
