"""napari-qpi: quantitative phase imaging for napari.

The physics (:mod:`napari_qpi.physics`), the retrieval methods (:mod:`napari_qpi.retrieval`), the
networks and their training, morphology and file formats are plain Python with no GUI; the napari
plugin in :mod:`napari_qpi._napari` is a thin adapter over them.
"""

from .acquisition import Acquisition
from .errors import QPIError

__version__ = "0.1.0"
__all__ = ["Acquisition", "QPIError", "__version__"]
