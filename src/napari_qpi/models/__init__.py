"""Registry of shipped and user models: model cards (JSON) plus fp16 safetensors weights.

- :class:`ModelCard`: what a model is, how to build and feed it, how it was trained and scored;
- :func:`list_models`, :func:`get_card`, :func:`load_model`: find and load registered models
  (weights checked against their sha256, never unpickled, cached per process);
- :func:`save_user_model`, :func:`export_model`, :func:`import_model`,
  :func:`delete_user_model`: manage the user's models (see :func:`user_models_dir`).

Run a model on data with :func:`napari_qpi.retrieval.deep.retrieve_deep`.
"""

from .card import (
    CARD_FILE,
    MODALITIES,
    MODEL_FAMILIES,
    NORMALISATIONS,
    WEIGHTS_FILE,
    ModelCard,
    check_normalisation,
    normalise,
    validate_name,
)
from .registry import (
    USER_DIR_ENV,
    ModelWarning,
    clear_cache,
    delete_user_model,
    export_model,
    get_card,
    import_model,
    list_models,
    load_model,
    save_user_model,
    select_device,
    shipped_models_dir,
    user_data_dir,
    user_models_dir,
)

__all__ = [
    "CARD_FILE",
    "MODALITIES",
    "MODEL_FAMILIES",
    "NORMALISATIONS",
    "USER_DIR_ENV",
    "WEIGHTS_FILE",
    "ModelCard",
    "ModelWarning",
    "check_normalisation",
    "clear_cache",
    "delete_user_model",
    "export_model",
    "get_card",
    "import_model",
    "list_models",
    "load_model",
    "normalise",
    "save_user_model",
    "select_device",
    "shipped_models_dir",
    "user_data_dir",
    "user_models_dir",
    "validate_name",
]
