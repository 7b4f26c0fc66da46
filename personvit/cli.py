"""The `personvit` command: one subcommand per job kind, each owned by its module's `main(argv)`.

Arguments are parsed first by the command's torch-free parser (personvit/cli_args.py), so `--help`
and usage mistakes answer at once; the command's module (torch, the training stack) is imported only
after that, and lazily, so a broken optional dependency of one command cannot break the others.
"""

from __future__ import annotations

import importlib
import sys

from personvit import __version__, cli_args

# EX_TEMPFAIL: "try again later", what a preempted run asks for; the one place `Preempted` becomes it.
PREEMPTED_EXIT_CODE = 75
# 128 + SIGINT, what a shell reports for a Ctrl-C'd command.
INTERRUPTED_EXIT_CODE = 130

COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("personvit.engine.pretrain", "self-supervised DINO+MIM pretraining (CONFIG [key=value ...])"),
    "finetune": ("personvit.engine.finetune", "BoT fine-tuning on a labeled ReID shard set (CONFIG [key=value ...])"),
    "evaluate": ("personvit.engine.evaluate", "mAP / CMC / mINP of a checkpoint (CONFIG [key=value ...])"),
    "export": ("personvit.engine.export", "export features (.npz) or the backbone (ONNX)"),
    "visualize": ("personvit.viz.cli", "attention maps, patch clusters, correspondences, ranked lists"),
    "ckpt": ("personvit.checkpoint_cli", "inspect (info) or compare checkpoints bitwise (compare A B)"),
    "report": ("personvit.report.cli", "PNG curves + summary.md of a pretraining run or a fine-tuning sweep folder"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: personvit <command> [args]   (personvit {__version__})", "", "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "`personvit <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `personvit` console script and of `python -m personvit`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"personvit: unknown command '{cmd}' (one of: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    cli_args.parse(cmd, rest)  # --help / usage errors exit here, before torch is imported
    module = importlib.import_module(COMMANDS[cmd][0])
    from personvit.checkpoint import CheckpointError
    from personvit.config.core import ConfigError
    from personvit.preemption import Preempted
    from personvit.run_folder import Interrupted
    from personvit.run_lock import RunLockedError
    from personvit.write_errors import WriteFailedError

    try:
        return int(module.main(rest) or 0)
    except Interrupted as e:
        print(f"personvit {cmd}: {e}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except KeyboardInterrupt:
        print(f"personvit {cmd}: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except WriteFailedError as e:
        # Full disk / quota / I/O error: the message names the file and the checkpoint that is safe.
        print(f"personvit {cmd}: error: {e}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, RunLockedError) as e:
        # A user mistake: one line naming the culprit, no traceback.
        print(f"personvit {cmd}: error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:
        # A checkpoint of this step is on disk; rerunning the same command resumes from it.
        print(f"personvit {cmd}: stopped on request ({e}); checkpoint saved, rerun to resume", file=sys.stderr)
        return PREEMPTED_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
