"""``rankguide r2r-train``: train an R2R router on label shards and choose its threshold.

Reads a label directory (``rankguide r2r-label``), checks it against the SRM (hidden size and
vocab size; the name too unless ``--allow-other-name``), trains, chooses the threshold on the
validation split for ``--target-recall`` or ``--target-lrm-share``, and writes ``OUT`` (safetensors)
with ``OUT.json`` (metadata, metrics, recipe and the command line).
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add the ``r2r-train`` subcommand."""
    parser = commands.add_parser(
        "r2r-train",
        help="train an R2R token router on label shards",
        description=(
            "Train the R2R router (hidden state, top-k logits and token embedding of the SRM -> "
            "divergent or not) and choose its threshold on the validation split."
        ),
    )
    parser.add_argument("--labels", required=True, type=Path, help="label directory")
    parser.add_argument("--out", required=True, type=Path, help="router file (.safetensors)")
    parser.add_argument(
        "--srm", default="demo", help="the SRM the labels come from: a directory, hub id or demo"
    )
    parser.add_argument("--width", type=int, default=128, help="router width (R2R: 1024)")
    parser.add_argument("--depth", type=int, default=2, help="residual blocks (R2R: 6)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience (epochs)")
    parser.add_argument("--val-share", type=float, default=0.1, help="share of problems held out")
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--target-recall", type=float, default=None, help="recall of divergent tokens (0.95)"
    )
    target.add_argument(
        "--target-lrm-share", type=float, default=None, help="share of tokens routed to the LRM"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where to train (cpu, cuda)")
    parser.add_argument(
        "--allow-other-name",
        action="store_true",
        help="accept labels whose SRM name differs from --srm (same shapes)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Read the labels, train, save."""
    from rankguide_graph.backend import load_causal_lm
    from rankguide_graph.errors import ConfigError
    from rankguide_graph.r2r import read_label_dir, save_router, srm_vocab_size
    from rankguide_graph.r2r.router import same_srm
    from rankguide_graph.r2r.train import TrainConfig, train_router

    _check_writable(args.out)
    config = TrainConfig(
        width=args.width,
        depth=args.depth,
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        patience=args.patience,
        val_share=args.val_share,
        target_recall=_target_recall(args),
        target_lrm_share=args.target_lrm_share,
        seed=args.seed,
        device=args.device,
    )
    labels = read_label_dir(args.labels)
    srm_path = _srm_source(args.srm)
    srm = load_causal_lm(srm_path, device="cpu", dtype="float32")
    vocab = srm_vocab_size(srm)
    where = f"labels in {str(args.labels)!r}"
    if labels.hidden_size != srm.hidden_size or labels.vocab_size != vocab:
        raise ConfigError(
            f"{where} come from SRM {labels.meta['srm']!r} (hidden size {labels.hidden_size}, "
            f"vocab {labels.vocab_size}), not from --srm {args.srm!r} (hidden size "
            f"{srm.hidden_size}, vocab {vocab})"
        )
    if not args.allow_other_name and not same_srm(str(labels.meta["srm"]), srm_path):
        if not same_srm(str(labels.meta["srm"]), args.srm):
            raise ConfigError(
                f"{where} come from SRM {labels.meta['srm']!r}, not from --srm {args.srm!r}: "
                "pass --allow-other-name if it is the same model under another name"
            )
    if labels.positives == 0:
        raise ConfigError(f"{where} hold no divergent token: nothing to learn")
    result = train_router(
        labels,
        srm.model.get_input_embeddings(),
        config,
        srm_vocab_size=vocab,
        progress=not args.no_progress,
    )
    meta = {
        "srm": _srm_name(args.srm),
        "lrm": labels.meta.get("lrm"),
        "labels": str(args.labels),
        "verifier": labels.meta.get("verifier"),
        "label_counts": labels.meta.get("counts"),
        "threshold": result.threshold,
        "threshold_rule": "prob > threshold (0.0 routes every token, 1.0 none)",
        "metrics": result.metrics,
        "recipe": result.recipe,
        "command": _command_line(args),
    }
    save_router(result.router, args.out, meta)
    m = result.metrics
    print(
        f"wrote {args.out}: threshold {result.threshold:.4f}; on validation recall "
        f"{m['recall']:.3f}, precision {m['precision']:.3f}, routed share "
        f"{m['routed_share']:.3f} (divergent {m['positive_rate']:.3f}), loss {m['val_loss']:.4f}"
    )
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The command line that trained the router, every option spelled out."""
    words = ["rankguide", "r2r-train"]
    for key, value in vars(args).items():
        if key in ("command", "handler") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    return shlex.join(words)


def _target_recall(args: argparse.Namespace) -> float | None:
    if args.target_lrm_share is not None:
        return None
    return 0.95 if args.target_recall is None else float(args.target_recall)


def _srm_name(name: str) -> str:
    """The SRM name for the router file: ``demo``, a local directory made absolute, a hub id."""
    path = Path(name).expanduser()
    return str(path.resolve()) if name != "demo" and path.is_dir() else name


def _srm_source(name: str) -> str:
    if name == "demo":
        from rankguide_graph.demo.pair import demo_dir

        return str(demo_dir() / "srm")
    return name


def _check_writable(out: Path) -> None:
    """Refuse an output path that cannot be written, before any training."""
    from rankguide_graph.errors import ConfigError

    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a directory: pass a file path")
    if not parent.is_dir():
        raise ConfigError(f"--out {str(out)!r}: its directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"--out {str(out)!r}: its directory {str(parent)!r} is not writable")
