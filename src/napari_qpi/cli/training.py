"""``napari-qpi search`` and ``napari-qpi train``: flags, and the runs they start.

The work itself is :mod:`napari_qpi.training.search`; this module turns flags into its settings,
writes the model folders and prints the summaries. It imports torch (through the training
modules), so :mod:`napari_qpi.cli` imports it only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import InputError, ModelError
from ..models.card import CARD_FILE, ModelCard
from ..nn.frontend import (
    CLASSICAL_BACKGROUND_ORDER,
    CLASSICAL_INPUTS,
    GRIDS,
    FrontEndConfig,
    residual_front_end,
)
from ..training.loop import ProgressBar, clear_work_files
from ..training.losses import LOSS_KINDS
from ..training.search import (
    SEARCH_SHARE,
    SearchSettings,
    TrainSettings,
    model_card,
    retrain,
    save_model_folder,
    search,
    train,
)
from ._record import Flags, command_line, set_threads


def _add_common(flags: Flags, defaults: TrainSettings) -> None:
    flags.add(
        "--out", required=True, path="output", help="model folder to write (name = folder name)"
    )
    flags.add("--name", help="model name (default: the --out folder's name)")
    flags.add("--width", type=float, default=0.5, help="encoder width multiplier")
    flags.add("--decoder-channels", type=int, default=64, help="channels of every decoder stage")
    flags.add(
        "--coord-channels",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="append (y, x) coordinate channels to the input",
    )
    flags.add(
        "--cells-positive",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="sign-free loss, output flipped so cells are positive (napari_qpi.nn.sign); the "
        "default trains against the signed (cells-positive) phase, which did as well or better "
        "in benchmarks/loss_ablation.py",
    )
    flags.add(
        "--stage-refine",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="PRNet: a residual depthwise-separable 3x3 block after each decoder stage's sum",
    )
    flags.add(
        "--branch-kernel",
        type=int,
        choices=(1, 3),
        default=1,
        help="PRNet: kernel side of every skip connection's convolution (1: the SparseMask "
        "space; 3: each connection sees a neighbourhood at its own resolution)",
    )
    flags.add(
        "--native-head",
        type=int,
        default=0,
        help="PRNet: channels of a head at the network's input grid (the native grid with a "
        "front end) that adds a correction from the output stage and the input itself; 0: "
        "none (the head upsamples the stride-2-or-coarser output stage)",
    )
    flags.add(
        "--front-end",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="demodulate the hologram inside the model at its detected sideband (classical "
        "filter, native grid) and train the network on cos / sin of the wrapped phase and the "
        "log amplitude (napari_qpi.nn.frontend); the card records it",
    )
    flags.add(
        "--residual",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="with the front end (implies --front-end): also give the network the classical "
        "method's unwrapped, background-corrected phase and train it to predict a correction "
        "to it (its last layer starts at zero: the untrained model is the classical method)",
    )
    flags.add(
        "--classical-input",
        choices=sorted(CLASSICAL_INPUTS),
        default="phase",
        help="with --residual: how the network reads the classical phase it corrects: 'phase' "
        "(the phase itself, radians), 'gradient' (its differences along y and x), 'wrapped' "
        "(cos / sin of it), 'both' (differences and cos / sin) or 'none' (not at all); all "
        "but 'phase' leave the network blind to the phase's level, so cells thicker than in "
        "training do not move it",
    )
    flags.add(
        "--native-grid",
        choices=GRIDS,
        default="integer",
        help="with the front end: the grid the network runs at: 'integer' (every q-th hologram "
        "pixel, q an integer dividing both sides, as the classical method) or 'tight' (the "
        "smallest grid that holds the sideband filter: fewer pixels, cells the same size in "
        "native pixels whatever the fringe period and the field's side)",
    )
    flags.add(
        "--background-order",
        type=int,
        default=CLASSICAL_BACKGROUND_ORDER,
        help="with the front end: total degree (0-5) of the polynomial background the classical "
        "phase it computes is corrected by (2: tilt, defocus, astigmatism, the classical "
        "method's default; 3 also coma, which the simulated holograms have)",
    )
    flags.add("--batch-size", type=int, default=defaults.batch_size)
    flags.add("--lr", type=float, default=defaults.lr, help="AdamW learning rate")
    flags.add(
        "--loss",
        choices=LOSS_KINDS,
        default=defaults.loss,
        help="offset-free phase loss; log_mse: the mean over fields of ln(field MSE), the "
        "held-out mean PSNR's gradient (close-up fields with large phase do not outweigh the rest)",
    )
    flags.add("--seed", type=int, default=defaults.seed)
    flags.add(
        "--eval-images",
        type=int,
        default=defaults.eval_images,
        help="held-out fields per split scored at the end",
    )
    flags.add("--minutes", type=float, help="wall-time budget (default: no limit)")
    flags.add(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice; on a machine shared with other jobs "
        "1 thread is often several times faster than 2)",
    )
    flags.add("--val-every", type=int, default=defaults.val_every, help="validate every N steps")
    flags.add("--work", record=False, help="folder for resumable checkpoints (default: <out>.work)")
    flags.add(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from checkpoints in --work",
    )
    flags.add("--overwrite", action="store_true", help="replace an existing --out")
    flags.add("--quiet", record=False, action="store_true", help="no progress bar")


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``napari-qpi search`` (defaults: about an hour on 2 CPU cores)."""
    search_defaults, train_defaults = SearchSettings(), TrainSettings()
    flags = Flags(parser, "search")
    _add_common(flags, train_defaults)
    flags.add(
        "--search-size",
        type=int,
        default=search_defaults.size,
        help="side of the search's training fields, px",
    )
    flags.add(
        "--search-steps",
        type=int,
        help=f"search steps (default {search_defaults.steps}; with --minutes: until the budget "
        "is spent)",
    )
    flags.add(
        "--size", type=int, default=train_defaults.size, help="side of the retraining fields, px"
    )
    flags.add(
        "--steps",
        type=int,
        help=f"retraining steps (default {train_defaults.steps}; with --minutes: until the "
        "budget is spent)",
    )
    flags.add("--sparsity-weight", type=float, default=search_defaults.sparsity_weight)
    flags.add("--gate-lr", type=float, default=search_defaults.gate_lr)
    flags.add(
        "--gate-warmup-steps",
        type=int,
        default=search_defaults.gate_warmup_steps,
        help="search steps that train the supernet's weights with the gates held at 1/2",
    )
    flags.add(
        "--gate-schedule",
        choices=["cosine", "constant"],
        default=search_defaults.gate_schedule,
        help="cosine: the gates' learning rate anneals with the weights'; constant: it stays at "
        "--gate-lr, so gates released late by --gate-warmup-steps keep the rate to move",
    )
    flags.add(
        "--threshold",
        type=float,
        default=search_defaults.threshold,
        help="prune connections with keep probability below this",
    )
    flags.add(
        "--max-inputs",
        type=int,
        help="keep at most this many inputs per decoder stage, those with the highest keep "
        "probability (default: every input above --threshold)",
    )
    flags.add("--supernet-out", path="output", help="also save the searched gated supernet here")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``napari-qpi train`` (baselines and given connectivities at the same budget)."""
    defaults = TrainSettings()
    flags = Flags(parser, "train")
    _add_common(flags, defaults)
    flags.add(
        "--family",
        choices=("prnet", "unet"),
        default="prnet",
        help="prnet: full supernet unless --connectivity; unet: U-Net baseline",
    )
    flags.add(
        "--connectivity",
        path="input",
        help="PRNet connectivity as JSON text or a card.json to take it from",
    )
    flags.add("--base-channels", type=int, default=64, help="U-Net base channels")
    flags.add(
        "--data",
        choices=("standard", "transfer", "wide", "large-cells"),
        default=defaults.data,
        help="training distribution: standard, the transfer split's second microscope, "
        "wide (2.5-8 px fringes, 0.12-0.45 um pixels, up to 9 rad, low contrast and light), or "
        "large-cells (standard with 30%% close-up batches: 1-2 cells spanning up to most of the "
        "field, 2.5-3 px fringes)",
    )
    flags.add(
        "--close-up",
        type=float,
        help="fraction of close-up batches (default: the --data distribution's own: 0.3 for "
        "large-cells, 0 otherwise)",
    )
    flags.add("--size", type=int, default=defaults.size, help="training field side, px")
    flags.add(
        "--steps",
        type=int,
        help=f"training steps (default {defaults.steps}; with --minutes: until the budget is "
        "spent)",
    )
    flags.add(
        "--init",
        help="registered model (or model folder) of the same architecture to start from "
        "(continues its training; its card's command and weights hash are recorded)",
    )
    flags.add(
        "--init-encoder",
        help="PRNet: registered PRNet (or model folder) whose encoder to start from (same "
        "--width and inputs; the decoder starts from random weights), e.g. to retrain a "
        "searched connectivity",
    )


SEARCHED_DESCRIPTION = (
    "NAS-PRNet: PRNet with a SparseMask-searched decoder, trained on synthetic off-axis holograms."
)

#: Step limit of a run given only a time budget: far more than any budget here allows.
UNLIMITED_STEPS = 10**7


def _steps(steps: int | None, minutes: float | None, default: int) -> int:
    """Steps of a run: as given; else, with a time budget, until it is spent; else ``default``."""
    if steps is not None:
        return steps
    return UNLIMITED_STEPS if minutes is not None else default


def _callbacks(args: argparse.Namespace, description: str) -> list[Any]:
    return [ProgressBar(description, disable=args.quiet)]


def _front_end(args: argparse.Namespace) -> dict[str, Any]:
    """``{"front_end": config}`` with ``--front-end`` or ``--residual``, else nothing (old cards
    unchanged)."""
    grid = getattr(args, "native_grid", "integer")
    if getattr(args, "residual", False):
        config = residual_front_end(getattr(args, "classical_input", "phase"))
    elif args.front_end:
        config = FrontEndConfig()
    else:
        return {}
    order = getattr(args, "background_order", CLASSICAL_BACKGROUND_ORDER)
    return {"front_end": replace(config, grid=grid, background_order=order).to_dict()}


def _prnet_network(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "width": args.width,
        "decoder_channels": args.decoder_channels,
        "coord_channels": args.coord_channels,
        "cells_positive": args.cells_positive,
        "stage_refine": args.stage_refine,
        "branch_kernel": args.branch_kernel,
        **({"native_head": args.native_head} if args.native_head else {}),
        **_front_end(args),
    }


def _work(args: argparse.Namespace) -> Path:
    return Path(args.work) if args.work else Path(str(Path(args.out)) + ".work")


def _check_out(args: argparse.Namespace, *folders: str | None) -> None:
    for folder in folders:
        if folder and (Path(folder) / CARD_FILE).exists() and not args.overwrite:
            raise ModelError(
                f"{folder} already holds a model; choose another folder or --overwrite"
            )


def _summary(record: Mapping[str, Any]) -> str:
    parts = [f"{record['steps']} steps, {record['timings']['images_per_s']} img/s"]
    for split, scores in record["metrics"].items():
        parts.append(f"{split}: {scores['psnr_db']:.2f} dB, SSIM {scores['ssim']:.3f}")
    return "; ".join(parts)


def search_main(args: argparse.Namespace) -> int:
    """``napari-qpi search``: search, prune, retrain and write the searched model folder."""
    set_threads(args)
    _check_out(args, args.out, args.supernet_out)
    command = command_line(args)
    share = SEARCH_SHARE
    search_settings = SearchSettings(
        network=_prnet_network(args),
        size=args.search_size,
        batch_size=args.batch_size,
        steps=_steps(args.search_steps, args.minutes, SearchSettings.steps),
        lr=args.lr,
        loss=args.loss,
        seed=args.seed,
        minutes=None if args.minutes is None else share * args.minutes,
        val_every=args.val_every,
        eval_images=args.eval_images if args.supernet_out else 0,
        sparsity_weight=args.sparsity_weight,
        gate_lr=args.gate_lr,
        threshold=args.threshold,
        max_inputs=args.max_inputs,
        gate_warmup_steps=args.gate_warmup_steps,
        gate_schedule=args.gate_schedule,
    )
    work = _work(args)
    found = search(
        search_settings,
        callbacks=_callbacks(args, "search"),
        checkpoint_path=work / "search.pt",
        resume=args.resume,
    )
    connectivity = found.record["connectivity"]
    print(
        f"searched connectivity ({found.record['connections_kept']} of "
        f"{found.record['connections_total']} connections): {json.dumps(connectivity)}"
    )
    if args.supernet_out:
        card = model_card(
            Path(args.supernet_out).name,
            "supernet",
            found,
            command=command,
            description="Gated PRNet supernet after the SparseMask search.",
        )
        save_model_folder(args.supernet_out, found.model, card, overwrite=args.overwrite)
    train_settings = TrainSettings(
        network=_prnet_network(args),
        size=args.size,
        batch_size=args.batch_size,
        steps=_steps(args.steps, args.minutes, TrainSettings.steps),
        lr=args.lr,
        loss=args.loss,
        seed=args.seed,
        minutes=None if args.minutes is None else (1 - share) * args.minutes,
        val_every=args.val_every,
        eval_images=args.eval_images,
    )
    trained = retrain(
        connectivity,
        train_settings,
        callbacks=_callbacks(args, "retrain"),
        checkpoint_path=work / "retrain.pt",
        resume=args.resume,
    )
    card = model_card(
        args.name or Path(args.out).name,
        "searched",
        trained,
        command=command,
        description=SEARCHED_DESCRIPTION,
        search_record=found.record,
    )
    folder = save_model_folder(args.out, trained.model, card, overwrite=args.overwrite)
    clear_work_files(work / "search.pt", work / "retrain.pt", prune=True)
    print(f"napari-qpi search: {_summary(trained.record)}; model in {folder}/")
    return 0


def _connectivity_arg(text: str) -> tuple[dict[str, list[str]], dict[str, Any] | None]:
    """``--connectivity`` (JSON text or a PRNet card) and, from a searched model's card, the search
    that found it, so a retrained connectivity keeps its provenance (gate table, settings, the
    command that ran the search)."""
    path = Path(text)
    try:
        if not (path.suffix == ".json" or path.is_dir()):
            return json.loads(text), None
        card = ModelCard.load(path)
        connectivity = card.config["connectivity"]
    except (ValueError, KeyError) as error:
        raise InputError(
            f'--connectivity must be JSON like \'{{"D0": ["E0", "D2"], ...}}\' or a PRNet '
            f"card.json; could not read {text!r}: {error}"
        ) from None
    search = card.training.get("search")
    if search is None:
        return connectivity, None
    return connectivity, {**search, "command": search.get("command", card.training["command"])}


def train_main(args: argparse.Namespace) -> int:
    """``napari-qpi train``: train a baseline (or a given connectivity) and write its folder."""
    set_threads(args)
    _check_out(args, args.out)
    command = command_line(args)
    search_record = None
    if args.family == "unet":
        network: dict[str, Any] = {
            "base_channels": args.base_channels,
            "cells_positive": args.cells_positive,
            **_front_end(args),
        }
        family = "baseline"
    else:
        network = _prnet_network(args)
        family = "supernet"
        if args.connectivity:
            network["connectivity"], search_record = _connectivity_arg(args.connectivity)
            family = "searched"
    settings = TrainSettings(
        network=network,
        size=args.size,
        batch_size=args.batch_size,
        steps=_steps(args.steps, args.minutes, TrainSettings.steps),
        lr=args.lr,
        loss=args.loss,
        seed=args.seed,
        minutes=args.minutes,
        val_every=args.val_every,
        eval_images=args.eval_images,
        data=args.data,
        init=args.init,
        init_encoder=args.init_encoder,
        close_up=args.close_up,
    )
    trained = train(
        args.family,
        settings,
        callbacks=_callbacks(args, f"train {args.family}"),
        checkpoint_path=_work(args) / "train.pt",
        resume=args.resume,
    )
    card = model_card(
        args.name or Path(args.out).name,
        family,
        trained,
        command=command,
        description=SEARCHED_DESCRIPTION if family == "searched" else "",
        search_record=search_record,
    )
    folder = save_model_folder(args.out, trained.model, card, overwrite=args.overwrite)
    clear_work_files(_work(args) / "train.pt", prune=True)
    print(f"napari-qpi train: {_summary(trained.record)}; model in {folder}/")
    return 0


__all__ = [
    "SEARCHED_DESCRIPTION",
    "add_search_arguments",
    "add_train_arguments",
    "search_main",
    "train_main",
]
