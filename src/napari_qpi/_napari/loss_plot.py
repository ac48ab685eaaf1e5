"""The live loss plot of the *Fine-tune* widget (QPainter, no plotting library)."""

from __future__ import annotations

import math
from typing import Any

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

#: Weight of the newest step in the smoothed training curve.
SMOOTHING = 0.1


class LossPlot(QWidget):
    """A small live plot of training loss (raw and smoothed) and validation loss against step.

    Drawn with QPainter (no plotting library); the loss axis is logarithmic when every value is
    positive.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(170)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.train: list[tuple[int, float]] = []
        self.smooth: list[tuple[int, float]] = []
        self.validation: list[tuple[int, float]] = []
        self.total = 1

    def clear(self, total: int = 1) -> None:
        """Forget the curves; the step axis runs to ``total``."""
        self.train, self.smooth, self.validation = [], [], []
        self.total = max(int(total), 1)
        self.update()

    def set_total(self, total: int) -> None:
        self.total = max(int(total), 1)

    def add_step(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            return
        self.train.append((step, loss))
        previous = self.smooth[-1][1] if self.smooth else loss
        self.smooth.append((step, (1 - SMOOTHING) * previous + SMOOTHING * loss))
        self.update()

    def add_validation(self, step: int, loss: float) -> None:
        if math.isfinite(loss):
            self.validation.append((step, loss))
            self.update()

    def paintEvent(self, event: Any) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        text = palette.color(palette.ColorRole.WindowText)
        painter.fillRect(self.rect(), palette.color(palette.ColorRole.Base))
        metrics = painter.fontMetrics()
        left, right = metrics.horizontalAdvance("0.000e-0") + 8, 10
        top, bottom = 22, metrics.height() + 10
        area = QRectF(left, top, self.width() - left - right, self.height() - top - bottom)
        painter.setPen(QPen(text, 1))
        painter.drawRect(area)
        values = [v for _, v in self.train] + [v for _, v in self.validation]
        if not values:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "loss appears here as it trains")
            painter.end()
            return
        log = min(values) > 0
        transform = math.log10 if log else float
        low, high = (transform(v) for v in (min(values), max(values)))
        if high - low < 1e-9:
            low, high = low - 0.5, high + 0.5
        pad = 0.05 * (high - low)
        low, high = low - pad, high + pad

        def point(step: float, value: float) -> QPointF:
            x = area.left() + area.width() * step / self.total
            y = area.bottom() - area.height() * (transform(value) - low) / (high - low)
            return QPointF(x, y)

        for fraction in (0.0, 0.5, 1.0):
            level = low + fraction * (high - low)
            y = area.bottom() - fraction * area.height()
            label = f"{10**level if log else level:.3g}"
            painter.drawText(QRectF(0, y - 8, left - 4, 16), Qt.AlignmentFlag.AlignRight, label)
        painter.drawText(
            QRectF(area.left(), area.bottom() + 2, area.width(), bottom),
            Qt.AlignmentFlag.AlignHCenter,
            f"step (of {self.total})",
        )
        painter.drawText(
            QRectF(area.right() - 40, area.bottom() + 2, 40, bottom),
            Qt.AlignmentFlag.AlignRight,
            str(self.total),
        )
        painter.save()
        painter.setClipRect(area)
        self._curve(painter, self.train, QColor(120, 160, 220, 90), 1, point)
        self._curve(painter, self.smooth, QColor(90, 150, 255), 2, point)
        self._curve(painter, self.validation, QColor(255, 150, 40), 2, point, dots=True)
        painter.restore()
        x = area.left() + 6
        for colour, name in (
            (QColor(90, 150, 255), "training"),
            (QColor(255, 150, 40), "validation"),
        ):
            painter.setPen(QPen(colour, 3))
            painter.drawLine(QPointF(x, 11), QPointF(x + 18, 11))
            painter.setPen(QPen(text, 1))
            painter.drawText(QPointF(x + 22, 15), name)
            x += 30 + metrics.horizontalAdvance(name)
        painter.setPen(QPen(text, 1))
        painter.drawText(
            QRectF(x, 0, area.right() - x, 20),
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
            "loss (log scale)" if log else "loss",
        )
        painter.end()

    @staticmethod
    def _curve(
        painter: QPainter,
        data: list[tuple[int, float]],
        colour: QColor,
        width: int,
        point: Any,
        *,
        dots: bool = False,
    ) -> None:
        if not data:
            return
        painter.setPen(QPen(colour, width))
        path = QPainterPath(point(*data[0]))
        for step, value in data[1:]:
            path.lineTo(point(step, value))
        painter.drawPath(path)
        if dots:
            painter.setBrush(colour)
            for step, value in data:
                painter.drawEllipse(point(step, value), 3, 3)
