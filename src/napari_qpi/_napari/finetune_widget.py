"""The *Fine-tune* widget: adapt a model to the user's microscope from annotated layers.

The user picks input layers (holograms, or CDP stacks), target phase layers (one per input, in
the same order; *Fill targets* makes them with the classical method), an optional labels layer
of pixels to ignore, the base model and the settings, and clicks *Train*. Training runs in a
background thread (:func:`napari_qpi.training.finetune.iter_finetune`) with a progress bar, an
ETA, a live plot of the training and validation loss, and *Stop*, which ends training after the
current step and still saves the best weights. The new user model appears at once in every
docked widget's model list (*Phase retrieval* among them).

The parts with a job of their own: *Train* / *Stop* and the training warm-up
(:mod:`.finetune_controls`), the classical targets (:mod:`.finetune_targets`), and model export /
import (:mod:`.finetune_transfer`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    Select,
    SpinBox,
    create_widget,
)
from napari.utils.notifications import show_info, show_warning
from psygnal import Signal
from qtpy.QtCore import QTimer

from ..errors import InputError, QPIError
from ..models import get_card, list_models
from ..retrieval import OffAxisSettings
from ..training.finetune import (
    FinetuneEvent,
    FinetuneOutcome,
    FinetuneSettings,
    base_front_end_order,
    check_new_name,
    default_checkpoint,
    front_end_order_for,
    iter_finetune,
    plan_finetune,
    resumable,
)
from ..training.loop import StopFlag
from .dock import DockContainer
from .finetune_controls import FinetuneControls, warm_up
from .finetune_targets import fill_worker, target_layer_steps
from .finetune_transfer import ModelTransfer
from .gui_settings import remember
from .layers import CDP_KEY, acquisition_of
from .loss_plot import LossPlot
from .task import (
    Job,
    _Failure,
    show_in_turns,
    wrapping_label,
)


class FinetuneWidget(DockContainer):
    """Fine-tune a registered model on annotated layers; the result is a new user model."""

    #: Emitted when *Fill targets* is over: the targets shown and selected, or the error said.
    filled = Signal()

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        defaults = FinetuneSettings(name="x")
        self._make_data_fields()
        self._make_training_fields(defaults)
        self.controls = FinetuneControls(self._make_job, self._on_saved, self._on_event)
        self.plot = LossPlot()
        self.transfer = ModelTransfer(self.export_name, self.refresh_model_lists, self._say)
        self.export_button = self.transfer.export_button
        self.import_button = self.transfer.import_button
        super().__init__(
            widgets=[
                self.inputs,
                self.targets,
                Container(
                    widgets=[self.fill_button, self.fill_order, self.fill_model],
                    layout="horizontal",
                    labels=True,
                ),
                self.ignore,
                self.pairs,
                self.base,
                self.self_supervised,
                self.epochs,
                self.lr,
                self.batch_size,
                self.crop,
                self.augment,
                self.val_fraction,
                self.minutes,
                self.model_name,
                self.resume,
                self.controls,
                self.transfer,
            ]
        )
        self.body.layout().insertWidget(len(self) - 1, self.plot)
        self.last_outcome: FinetuneOutcome | None = None
        self._connect_events(viewer)

    def _make_data_fields(self) -> None:
        """The training data: input and target layers, the classical fill of the targets (with its
        background order), the ignore labels and the pairs shown."""
        self.inputs = Select(
            label="inputs",
            choices=self._image_choices,
            tooltip="hologram (or CDP) layers to learn from; stacks count plane by plane",
        )
        self.targets = Select(
            label="targets",
            choices=self._image_choices,
            tooltip="target phase (radians), one layer per input, in the same order",
        )
        for select in (self.inputs, self.targets):
            select.native.setMaximumHeight(72)
        self.fill_button = PushButton(
            text="Fill targets (classical)",
            tooltip="make a target phase layer per input with the classical method (in the "
            "background) and select them as targets",
        )
        self.fill_order = SpinBox(
            label="background order",
            value=OffAxisSettings().background_order,
            min=0,
            max=5,
            tooltip="order of the polynomial background the classical targets remove (set to "
            "the base model's own when it has one: 3 for the shipped hologram networks); raise "
            "it for microscopes with strong (e.g. spherical) aberrations",
        )
        self.fill_model = CheckBox(
            text="in the model too",
            value=True,
            tooltip="a residual hologram model (its network corrects the classical phase) removes "
            "a background of this order from its own classical phase too, while it is trained "
            "and in the new model",
        )
        self.ignore = create_widget(
            annotation=napari.layers.Labels | None,
            label="ignore",
            options={"nullable": True, "tooltip": "labels layer: painted pixels are ignored"},
        )
        self.pairs = wrapping_label(Label(value=""))

    def _make_training_fields(self, defaults: FinetuneSettings) -> None:
        """The base model and the training settings (epochs, learning rate, batch, crop in pixels,
        augmentation, validation fraction, time limit in minutes), the new model's name, resume."""
        self.base = ComboBox(
            label="base model",
            choices=self._base_choices,
            tooltip="the installed model to start from (only models for the inputs' kind)",
        )
        self.self_supervised = CheckBox(
            text="self-supervised (no targets)",
            value=False,
            visible=False,
            tooltip="learn from the inputs alone, no targets: CDP models through their masks "
            "(measurement consistency), hologram models through the sideband their phase "
            "re-forms (adapts a model to your microscope; the classical targets of 'fill' "
            "usually teach more)",
        )
        self.epochs = SpinBox(
            label="epochs",
            value=defaults.epochs,
            min=1,
            max=100_000,
            tooltip="passes over the training data (the time limit may end training sooner)",
        )
        self.lr = FloatSpinBox(
            label="learning rate",
            value=defaults.lr,
            min=1e-5,
            max=0.1,
            step=1e-5,
            tooltip="step size of the optimiser; small values adapt the model gently",
        )
        self.batch_size = SpinBox(
            label="batch",
            value=defaults.batch_size,
            min=1,
            max=256,
            tooltip="crops per training step (halved automatically if memory runs out)",
        )
        self.crop = SpinBox(
            label="crop (px)",
            value=defaults.crop,
            min=32,
            max=4096,
            step=32,
            tooltip="side of the square patches cut from the images for each step",
        )
        self.augment = CheckBox(
            text="flips, 90° rotations",
            value=defaults.augment,
            tooltip="show the network flipped and rotated copies (more variety from few images)",
        )
        self.val_fraction = FloatSpinBox(
            label="validation",
            value=defaults.val_fraction,
            min=0.0,
            max=0.5,
            step=0.05,
            tooltip="fraction of the data held out to score the model (the orange curve)",
        )
        self.minutes = FloatSpinBox(
            label="time limit (min)",
            value=0.0,
            min=0.0,
            max=10_000.0,
            step=0.5,
            tooltip="0: no limit (the epochs decide)",
        )
        self.model_name = LineEdit(
            label="model name",
            value="",
            tooltip="name of the new model; it appears under this name in Phase retrieval",
        )
        self.resume = CheckBox(
            text="resume a stopped run of this name",
            value=True,
            tooltip="continue a run that was stopped, if it used the same data and settings",
        )

    def _connect_events(self, viewer: napari.viewer.Viewer) -> None:
        """Wire the buttons and the layer lists, remember the settings, warm up training."""
        self.fill_button.changed.connect(self.fill_targets)
        self.inputs.changed.connect(self._inputs_changed)
        self.targets.changed.connect(self._show_pairs)
        self.base.changed.connect(self._base_changed)
        self.reset_choices()
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)
        self._base_changed()
        remember(  # not the targets' order: it follows the base model (_base_changed)
            "finetune",
            {
                "fill_model": self.fill_model,
                "epochs": self.epochs,
                "lr": self.lr,
                "batch_size": self.batch_size,
                "crop": self.crop,
                "augment": self.augment,
                "val_fraction": self.val_fraction,
                "minutes": self.minutes,
                "resume": self.resume,
            },
        )
        warm_up()

    # choices ------------------------------------------------------------------------------------

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, napari.layers.Image) and not layer.rgb
        ]

    def input_modality(self) -> str:
        """``"cdp"`` if the first input layer says so in its metadata, else ``"hologram"``."""
        for layer in self.inputs.value:
            if CDP_KEY in layer.metadata or acquisition_of(layer.metadata).modality == "cdp":
                return "cdp"
        return "hologram"

    def _base_choices(self, _widget: Any = None) -> list[str]:
        return [card.name for card in list_models(self.input_modality())]

    def _inputs_changed(self, *_: Any) -> None:
        self.base.reset_choices()
        self._show_pairs()

    def _base_changed(self, *_: Any) -> None:
        name = self.base.value
        self.self_supervised.visible = bool(name)
        if name and not self.model_name.value:
            self.model_name.value = _free_name(f"{name}-finetuned")
        try:
            order = base_front_end_order(get_card(name)) if name else None
        except QPIError:  # a model removed since the list was made: Start names the problem
            order = None
        if order is not None:  # classical targets keep the order the model's front end uses
            self.fill_order.value = order

    def _show_pairs(self, *_: Any) -> None:
        inputs, targets = self.inputs.value, self.targets.value
        if not inputs:
            self.pairs.value = "pick input and target layers"
        elif targets and len(targets) != len(inputs):
            self.pairs.value = f"{len(inputs)} inputs but {len(targets)} targets"
        else:
            shown = [
                f"{i.name} → {t.name}"
                for i, t in zip(inputs, targets or [None] * len(inputs), strict=True)
                if t is not None
            ]
            self.pairs.value = "; ".join(shown) or f"{len(inputs)} input(s), no targets yet"

    # actions ------------------------------------------------------------------------------------

    def fill_targets(self, *_: Any) -> Any:
        """Make a target layer per input with the classical method, in a worker; select them.

        The planes are retrieved off the GUI thread (progress on the status line); the targets
        are ordinary phase layers: correct them (e.g. replace bad regions) or mark where they are
        wrong in the ignore layer. Returns the started worker (``None`` if refused).
        """
        layers = list(self.inputs.value)
        try:
            if not layers:
                raise InputError("pick the input hologram layers first")
            if self.input_modality() == "cdp":
                raise InputError(
                    "the classical target button works on holograms; for CDP stacks give targets "
                    "or tick self-supervised"
                )
        except QPIError as error:
            self.controls.say(str(error))
            show_warning(str(error))
            return None
        worker = fill_worker(layers, int(self.fill_order.value))
        worker.yielded.connect(
            lambda p: self.controls.say(f"filling targets: plane {p[0]} / {p[1]}")
        )
        # the layers are shown in turns of the event loop of their own; then Fill is ready again
        worker.returned.connect(
            lambda result: show_in_turns(self._target_steps(layers, result), self._fill_done)
        )
        self.fill_button.enabled = False
        self.fill_worker = worker
        QTimer.singleShot(0, worker.start)
        return worker

    def _target_steps(self, layers: list[Any], result: Any) -> Iterator[None]:
        """Show the filled targets in turns of the event loop (:func:`target_layer_steps`), then
        select them."""
        if isinstance(result, _Failure):
            self.controls.say(str(result.error))
            show_warning(str(result.error))
            return
        added = yield from target_layer_steps(self.viewer, layers, result)
        self.reset_choices()
        self.inputs.value = layers
        self.targets.value = added
        self._show_pairs()
        self.controls.say(f"{len(added)} target layer(s) filled with the classical method")

    def _fill_done(self) -> None:
        """The targets are on screen (or the error said): *Fill* can be clicked again."""
        self.fill_button.enabled = True
        self.filled.emit()

    def settings(self) -> FinetuneSettings:
        """The settings shown (raises :class:`QPIError` for an invalid name or value)."""
        name = self.model_name.value.strip()
        if not name:
            raise InputError("give the new model a name")
        return FinetuneSettings(
            name=name,
            epochs=int(self.epochs.value),
            lr=float(self.lr.value),
            batch_size=int(self.batch_size.value),
            crop=int(self.crop.value),
            augment=bool(self.augment.value),
            val_fraction=float(self.val_fraction.value),
            self_supervised=bool(self.self_supervised.value),
            minutes=float(self.minutes.value) or None,
            front_end_order=self._front_end_order(),
        )

    def _front_end_order(self) -> int | None:
        """The targets' background order for the base model's front end (see *in the model
        too*), when that changes it."""
        if not (self.fill_model.value and self.base.value):
            return None
        return front_end_order_for(get_card(self.base.value), int(self.fill_order.value))

    def _make_job(self) -> Job:
        inputs, targets = list(self.inputs.value), list(self.targets.value)
        base = self.base.value
        if not inputs:
            raise InputError("pick at least one input layer (holograms or CDP stacks)")
        if not base:
            raise InputError(
                f"no {self.input_modality()} model is installed to start from; import one first"
            )
        settings = self.settings()
        checkpoint = default_checkpoint(settings.name)
        resume = bool(self.resume.value)
        replace = check_new_name(settings.name, checkpoint_path=checkpoint, resume=resume)
        ignore_layer = self.ignore.value
        measurements = [np.asarray(layer.data) for layer in inputs]
        target_arrays = (
            None
            if settings.self_supervised or not targets
            else [np.asarray(layer.data) for layer in targets]
        )
        # a copy: the user may paint on the ignore layer while the worker reads it
        ignore = None if ignore_layer is None else np.array(ignore_layer.data, copy=True)
        modality = self.input_modality()
        masks = next(
            (layer.metadata[CDP_KEY]["masks"] for layer in inputs if CDP_KEY in layer.metadata),
            None,
        )
        names = [layer.name for layer in inputs]
        target_names = [layer.name for layer in targets]
        stop = StopFlag()
        self.controls.stop_flag = stop
        self.controls.budget_s = None if settings.minutes is None else 60.0 * settings.minutes
        self.plot.clear(1)

        plan_name = settings.name

        def run() -> Job:
            # checking, pairing and hashing the data (the resume fingerprint) run here, off the
            # GUI thread; bad input still comes back as a one-line message
            plan = plan_finetune(
                base,
                measurements,
                target_arrays,
                ignore,
                settings=settings,
                modality=modality,
                names=names,
                target_names=target_names,
                command="napari Fine-tune widget",
                masks=masks,
            )
            previous = resumable(checkpoint) if resume else None
            if previous is not None and previous.get("fingerprint") == plan.fingerprint:
                yield FinetuneEvent(
                    kind="notice", message=f"resuming the stopped run of {plan_name!r}"
                )
            return (
                yield from iter_finetune(
                    plan, stop=stop, checkpoint_path=checkpoint, resume=resume, overwrite=replace
                )
            )

        return run()

    def _on_event(self, event: FinetuneEvent) -> None:
        if event.kind == "start":
            self.plot.set_total(event.total)
        elif event.kind == "step":
            self.plot.set_total(self.controls.expected_total)
            self.plot.add_step(event.step, event.loss)
        elif event.kind == "validation":
            self.plot.add_validation(event.step, event.metrics.get("val_loss", math.nan))
        elif event.kind == "history" and event.metrics:  # a resumed run's earlier curve
            self.plot.add_validation(event.step, event.metrics.get("val_loss", math.nan))
        elif event.kind == "history":
            self.plot.add_step(event.step, event.loss)

    def _on_saved(self, outcome: FinetuneOutcome) -> None:
        self.last_outcome = outcome
        self.refresh_model_lists()
        scores = outcome.card.metrics.get("finetune_validation", {})
        psnr = scores.get("psnr_db")
        shown = f"; validation {psnr:.1f} dB" if isinstance(psnr, float) else ""
        message = (
            f"saved model {outcome.card.name!r} ({outcome.status} at step {outcome.steps} of "
            f"{outcome.total}{shown})"
        )
        if outcome.status == "stopped":
            message += "; click Train again to resume"
        self.controls.result_message = message
        show_info(message)
        self.model_name.value = outcome.card.name

    def refresh_model_lists(self) -> None:
        """Let every docked widget (e.g. *Phase retrieval*) list the models anew."""
        self.reset_choices()
        for widget in list(self.viewer.window.dock_widgets.values()):
            if widget is not self and hasattr(widget, "reset_choices"):
                widget.reset_choices()

    def export_name(self) -> str | None:
        """The model *Export* writes: the one trained last here, else the base model."""
        return self.last_outcome.card.name if self.last_outcome else self.base.value

    def export_model(self, path: str) -> None:
        """Export :meth:`export_name` to ``path`` (a .zip file, or a folder)."""
        self.transfer.export_model(path)

    def import_model(self, path: str) -> str:
        """Install a model exported on another machine; returns its name."""
        return self.transfer.import_model(path)

    def _say(self, message: str) -> None:
        self.controls.status.value = message


def _free_name(stem: str) -> str:
    """``stem``, or ``stem-2``, ``stem-3``, ... whichever no registered model has."""
    taken = {card.name.lower() for card in list_models()}
    name, number = stem, 1
    while name.lower() in taken:
        number += 1
        name = f"{stem}-{number}"
    return name
