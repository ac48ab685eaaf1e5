"""Model registry (cards, save / load / export / import) and deep retrieval (tiling, batching)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from napari_qpi.acquisition import Acquisition
from napari_qpi.errors import InputError, ModelError
from napari_qpi.models import (
    ModelCard,
    ModelWarning,
    clear_cache,
    delete_user_model,
    export_model,
    get_card,
    import_model,
    list_models,
    load_model,
    normalise,
    registry,
    save_user_model,
    select_device,
    user_models_dir,
    validate_name,
)
from napari_qpi.nn import build_network
from napari_qpi.retrieval.deep import retrieve_deep

UNET = {"base_channels": 4, "depth": 2}
PRNET = {"width": 0.25, "decoder_channels": 8, "connectivity": {"D0": ["E0", "G"]}}


@pytest.fixture(autouse=True)
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A private user folder and an empty shipped folder for every test."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setenv("NAPARI_QPI_USER_DIR", str(tmp_path / "user"))
    monkeypatch.setattr(registry, "shipped_models_dir", lambda: shipped)
    clear_cache()
    torch.manual_seed(0)
    yield {"shipped": shipped, "user": tmp_path / "user" / "models", "tmp": tmp_path}
    clear_cache()


def make_card(name: str = "tiny-unet", network: str = "unet", **changes: object) -> ModelCard:
    config = UNET if network == "unet" else PRNET
    fields: dict[str, object] = {
        "name": name,
        "family": "baseline",
        "modality": "hologram",
        "architecture": {"network": network, "config": dict(config)},
        "normalisation": {"method": "mean_std"},
        "training": {"recipe": "test", "seed": 0, "data": "none", "command": "pytest"},
        "metrics": {"test": {"psnr_db": 30.0, "ssim": 0.9, "rmse_rad": 0.1, "command": "pytest"}},
    }
    return ModelCard(**(fields | changes))


def tiny_network(network: str = "unet") -> nn.Module:
    """A real network with non-trivial batch-norm statistics, in eval mode."""
    net = build_network(network, UNET if network == "unet" else PRNET)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return net.eval()


def fp16_copy(net: nn.Module) -> nn.Module:
    clone = build_network("unet", UNET)
    clone.load_state_dict(
        {k: v.half().float() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    )
    return clone.eval()


def batch(seed: int = 1, shape: tuple[int, ...] = (2, 1, 32, 48)) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def fringes(shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    y, x = np.mgrid[: shape[0], : shape[1]]
    return (1 + np.cos(2 * np.pi * (0.2 * x + 0.1 * y))).astype(np.float32)


# ---------------------------------------------------------------------------------- model cards


def test_card_json_round_trip_keeps_unknown_keys(tmp_path: Path) -> None:
    card = make_card(base_model=None)
    again = ModelCard.from_json(card.to_json())
    assert again == card
    data = card.to_dict() | {"future_field": [1, 2]}
    assert ModelCard.from_dict(data).extra["future_field"] == [1, 2]
    saved = card.save(tmp_path)
    assert saved.name == "card.json" and ModelCard.load(tmp_path) == card


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"family": "magic"}, "unknown family"),
        ({"modality": "fluorescence"}, "unknown modality"),
        ({"architecture": {"config": {}}}, "network"),
        ({"normalisation": {"method": "zscore"}}, "normalisation"),
        ({"family": "finetuned"}, "base_model"),
        ({"weights": {"file": "../evil.safetensors"}}, "weights.file"),
        ({"schema_version": 99}, "Update napari-qpi"),
    ],
)
def test_card_validation_messages(change: dict[str, object], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        ModelCard.from_dict(make_card().to_dict() | change)


def test_card_missing_keys_are_named() -> None:
    data = make_card().to_dict()
    del data["modality"], data["architecture"]
    with pytest.raises(ModelError, match="modality, architecture"):
        ModelCard.from_dict(data)
    with pytest.raises(ModelError, match="not valid JSON"):
        ModelCard.from_json("{oops")


@pytest.mark.parametrize("name", ["", "a b", "../up", ".hidden", "x/y", "con", "nul.txt", "end."])
def test_bad_names_refused(name: str) -> None:
    with pytest.raises(ModelError, match="name"):
        validate_name(name)


def test_normalise_per_image() -> None:
    x = np.random.default_rng(0).normal(5, 3, size=(3, 40, 40)).astype(np.float32)
    out = normalise(x, {"method": "mean_std"})
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1, atol=1e-4)
    np.testing.assert_allclose(
        normalise(x, {"method": "fixed", "offset": 5, "scale": 2}), (x - 5) / 2
    )
    with pytest.raises(InputError, match="mean intensity"):
        normalise(-np.abs(x), {"method": "mean"})


# ----------------------------------------------------------------------------------- registry


def test_save_list_load_gives_same_outputs(dirs: dict[str, Path]) -> None:
    net = tiny_network()
    path = save_user_model(net, make_card())
    assert path == dirs["user"] / "tiny-unet" == user_models_dir() / "tiny-unet"
    assert sorted(p.name for p in path.iterdir()) == ["card.json", "model.safetensors"]
    assert not [p for p in dirs["user"].iterdir() if p.name.startswith(".")]
    [card] = list_models()
    assert (card.name, card.source, card.path) == ("tiny-unet", "user", path)
    assert len(card.sha256) == 64 and card.weights["dtype"] == "float16"
    assert list_models("cdp") == []

    loaded, loaded_card = load_model("tiny-unet", device="cpu")
    assert not loaded.training
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert loaded_card == card
    x = batch()
    private, _ = load_model("tiny-unet", device="cpu", cached=False)
    with torch.no_grad():
        expected, got, exact, as_saved = fp16_copy(net)(x), loaded(x), net(x), private(x)
    # the private copy is the saved network as built; the cached one is served with its batch
    # norms folded into the convolutions (napari_qpi.nn.inference): the same output
    torch.testing.assert_close(as_saved, expected, rtol=0, atol=0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, exact, rtol=1e-2, atol=1e-2)
    assert any(isinstance(m, nn.BatchNorm2d) for m in private.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in loaded.modules())

    assert load_model("tiny-unet", device="cpu")[0] is loaded
    assert load_model("tiny-unet", device="cpu", cached=False)[0] is not loaded


def test_saved_weights_are_safetensors_not_pickle(dirs: dict[str, Path]) -> None:
    save_user_model(tiny_network(), make_card())
    raw = (dirs["user"] / "tiny-unet" / "model.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert header["__metadata__"]["napari_qpi_model"] == "tiny-unet"
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} <= {"F16", "I64"}


def test_tampered_weights_are_detected(dirs: dict[str, Path]) -> None:
    save_user_model(tiny_network(), make_card())
    weights = dirs["user"] / "tiny-unet" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt or was changed"):
        load_model("tiny-unet", device="cpu")
    with pytest.raises(ModelError, match="corrupt or was changed"):
        export_model("tiny-unet", dirs["tmp"] / "out.zip")


def test_missing_weights_file_is_named(dirs: dict[str, Path], rng: np.random.Generator) -> None:
    save_user_model(tiny_network(), make_card())
    load_model("tiny-unet", device="cpu")  # cached: the check must not trust the cache
    (dirs["user"] / "tiny-unet" / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="Cannot read the weights of model 'tiny-unet'"):
        load_model("tiny-unet", device="cpu")
    with pytest.raises(ModelError, match="Re-install or re-import"):
        retrieve_deep(rng.normal(size=(32, 32)), model="tiny-unet", device="cpu")


def test_name_collision_refused_unless_overwrite(dirs: dict[str, Path]) -> None:
    first = tiny_network()
    save_user_model(first, make_card())
    with pytest.raises(ModelError, match="already exists"):
        save_user_model(tiny_network(), make_card())
    with pytest.raises(ModelError, match="already exists"):
        save_user_model(tiny_network(), make_card(name="TINY-unet"))
    old, _ = load_model("tiny-unet", device="cpu")
    second = tiny_network()
    save_user_model(second, make_card(description="v2"), overwrite=True)
    new, card = load_model("tiny-unet", device="cpu")
    assert new is not old and card.description == "v2"
    x = batch()
    with torch.no_grad():
        torch.testing.assert_close(new(x), fp16_copy(second)(x), rtol=1e-5, atol=1e-5)
    assert [p.name for p in dirs["user"].iterdir()] == ["tiny-unet"]


def test_shipped_models_are_read_only(dirs: dict[str, Path]) -> None:
    save_user_model(tiny_network(), make_card(name="shipped-net", family="searched"))
    shutil.move(dirs["user"] / "shipped-net", dirs["shipped"] / "shipped-net")
    save_user_model(tiny_network(), make_card(name="mine"))
    assert [(c.name, c.source) for c in list_models()] == [
        ("shipped-net", "shipped"),
        ("mine", "user"),
    ]
    for overwrite in (False, True):
        with pytest.raises(ModelError, match="shipped"):
            save_user_model(tiny_network(), make_card(name="shipped-net"), overwrite=overwrite)
    with pytest.raises(ModelError, match="shipped"):
        delete_user_model("shipped-net")
    archive = export_model("mine", dirs["tmp"] / "mine.zip")
    with pytest.raises(ModelError, match="shipped"):
        import_model(archive, name="shipped-net", overwrite=True)
    module, card = load_model("shipped-net", device="cpu")
    assert card.source == "shipped" and isinstance(module, nn.Module)


@pytest.mark.parametrize("target", ["exported.zip", "exported-folder"])
def test_export_import_round_trip(dirs: dict[str, Path], target: str) -> None:
    net = tiny_network()
    save_user_model(net, make_card())
    out = export_model("tiny-unet", dirs["tmp"] / target)
    if out.suffix == ".zip":
        names = zipfile.ZipFile(out).namelist()
        assert sorted(names) == ["tiny-unet/card.json", "tiny-unet/model.safetensors"]
    else:
        assert sorted(p.name for p in out.iterdir()) == ["card.json", "model.safetensors"]
    with pytest.raises(ModelError, match="already exists"):
        import_model(out)
    card = import_model(out, name="tiny-copy")
    assert card.name == "tiny-copy" and card.sha256 == get_card("tiny-unet").sha256
    delete_user_model("tiny-unet")
    assert [c.name for c in list_models()] == ["tiny-copy"]
    card = import_model(out)
    assert card.source == "user"
    x = batch()
    with torch.no_grad():
        a = load_model("tiny-copy", device="cpu")[0](x)
        b = load_model("tiny-unet", device="cpu")[0](x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_import_refuses_tampered_archive(dirs: dict[str, Path]) -> None:
    save_user_model(tiny_network(), make_card())
    folder = export_model("tiny-unet", dirs["tmp"] / "folder")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0x01
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt or were changed"):
        import_model(folder, name="other")
    with pytest.raises(ModelError, match="neither a model folder nor"):
        import_model(folder / "model.safetensors")
    assert [c.name for c in list_models()] == ["tiny-unet"]


def test_damaged_user_models_are_skipped_with_a_warning(dirs: dict[str, Path]) -> None:
    save_user_model(tiny_network(), make_card())
    (dirs["user"] / "broken").mkdir()
    (dirs["user"] / "broken" / "card.json").write_text("{not json")
    (dirs["user"] / "misnamed").mkdir()
    make_card(name="other", weights={"file": "model.safetensors", "sha256": "0" * 64}).save(
        dirs["user"] / "misnamed"
    )
    (dirs["user"] / "empty").mkdir()
    with pytest.warns(ModelWarning) as caught:
        cards = list_models()
    assert [c.name for c in cards] == ["tiny-unet"]
    text = " ".join(str(w.message) for w in caught)
    assert "broken" in text and "misnamed" in text and "empty" in text
    with pytest.raises(ModelError, match="damaged"):
        get_card("broken")


def test_unknown_and_deleted_models(dirs: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match="No model named 'nope'"):
        load_model("nope")
    with pytest.raises(ModelError, match="No user model"):
        delete_user_model("nope")
    save_user_model(tiny_network(), make_card())
    load_model("tiny-unet", device="cpu")
    delete_user_model("tiny-unet")
    assert list_models() == [] and not registry._CACHE
    with pytest.raises(InputError, match="modality"):
        list_models("phase")


def test_save_refuses_a_card_that_does_not_match_the_network() -> None:
    card = make_card(architecture={"network": "unet", "config": {"base_channels": 8, "depth": 2}})
    with pytest.raises(ModelError, match="do not fit"):
        save_user_model(tiny_network(), card)
    assert list_models() == []


def test_device_selection() -> None:
    assert select_device("cpu").type == "cpu"
    assert select_device(None).type in {"cpu", "cuda", "mps"}
    with pytest.raises(InputError, match="Unknown device"):
        select_device("tpu-ish")


# ------------------------------------------------------------------------------ deep retrieval


class PointwiseNet(nn.Module):
    """A 1x1 convolution with a nonlinearity: no spatial context, so tiling is exact."""

    def __init__(self, stride: int = 8, kernel: int = 1, linear: bool = False) -> None:
        super().__init__()
        self.stride = stride
        self.linear = linear
        self.conv = nn.Conv2d(1, 1, kernel, padding=kernel // 2)
        self.calls: list[tuple[int, ...]] = []
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / kernel**2)
            self.conv.bias.fill_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] % self.stride == 0 and x.shape[-1] % self.stride == 0
        self.calls.append(tuple(x.shape))
        y = self.conv(x)
        return y if self.linear else torch.tanh(y)


def standin(
    kernel: int = 1, linear: bool = False, **changes: object
) -> tuple[PointwiseNet, ModelCard]:
    card = make_card(name="standin", architecture={"network": "standin", "config": {}})
    return PointwiseNet(kernel=kernel, linear=linear), card.replace(**changes)


def test_tiled_equals_whole_for_pointwise_network(rng: np.random.Generator) -> None:
    image = rng.normal(10, 2, size=(150, 97)).astype(np.float32)
    model = standin()
    whole = retrieve_deep(image, model=model, tile=None)
    tiled = retrieve_deep(image, model=model, tile=40, overlap=8, batch_size=3)
    assert whole.phase.shape == tiled.phase.shape == image.shape
    assert whole.phase.dtype == tiled.phase.dtype == np.float32
    assert whole.info["tiles"] == 1 and tiled.info["tiles"] > 6
    np.testing.assert_allclose(tiled.phase, whole.phase, atol=1e-6)
    expected = np.tanh(normalise(image, {"method": "mean_std"}) + 0.1)
    np.testing.assert_allclose(whole.phase, expected, atol=1e-5)


def test_tiled_close_to_whole_with_small_receptive_field(rng: np.random.Generator) -> None:
    image = rng.normal(10, 2, size=(130, 110)).astype(np.float32)
    model = standin(kernel=3)
    whole = retrieve_deep(image, model=model, tile=None).phase
    tiled = retrieve_deep(image, model=model, tile=48, overlap=16).phase
    assert np.abs(tiled - whole).max() < 0.01
    assert np.abs(tiled - whole).mean() < 1e-4


class NegatingNet(nn.Module):
    """Returns minus its input, with the cells-positive sign rule of the shipped networks."""

    stride = 8

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(cells_positive=True)
        self.scale = nn.Parameter(torch.tensor(-1.0))

    def forward(self, x: torch.Tensor, fix_sign: bool | None = None) -> torch.Tensor:
        from napari_qpi.nn.sign import make_cells_positive

        y = self.scale * x
        return make_cells_positive(y) if fix_sign in (None, True) else y


def test_sign_rule_is_applied_to_the_whole_image_not_to_each_tile() -> None:
    yy, xx = np.mgrid[:150, :120]
    image = np.full((150, 120), 10.0, np.float32)
    image[(yy - 30) ** 2 + (xx - 30) ** 2 < 400] = 14.0
    image += np.random.default_rng(0).normal(0, 0.05, image.shape).astype(np.float32)
    model = (NegatingNet(), make_card(name="negating", architecture={"network": "x", "config": {}}))
    whole = retrieve_deep(image, model=model, tile=None).phase
    tiled = retrieve_deep(image, model=model, tile=40, overlap=8)
    assert tiled.info["tiles"] > 6
    expected = normalise(image, {"method": "mean_std"})
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    np.testing.assert_allclose(tiled.phase, expected, atol=1e-5)


def test_tiles_blend_smoothly_for_a_real_network(rng: np.random.Generator) -> None:
    image = rng.normal(10, 2, size=(150, 130)).astype(np.float32)
    model = (tiny_network(), make_card())
    whole = retrieve_deep(image, model=model, tile=None).phase
    tiled = retrieve_deep(image, model=model, tile=64, overlap=32)
    error = np.abs(tiled.phase - whole)
    assert tiled.info["tiles"] == 16
    assert error.mean() < 0.03 * whole.std() and error.max() < 0.2 * whole.std()


def test_a_hologram_larger_than_memory_allows_is_tiled_to_fit(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from napari_qpi.retrieval import deep

    image = rng.normal(10, 2, size=(300, 260)).astype(np.float32)
    whole = retrieve_deep(image, model=standin(), tile=None)
    assert whole.info["tiles"] == 1 and not whole.info["memory"]["tile_reduced"]
    module, card = standin()
    per_pixel = deep.bytes_per_pixel(module, 1, module.stride, torch.device("cpu"))
    budget = int(1.5 * per_pixel * 64 * 64)  # room for one tile of 72^2, not for 304 x 264
    assert per_pixel * 304 * 264 > budget and not module.calls
    tiled = retrieve_deep(image, model=(module, card), tile=None, max_memory=budget)
    info = tiled.info
    assert info["memory"] == {
        "limit_bytes": budget,
        "bytes_per_pixel": round(per_pixel, 1),
        "tile_reduced": True,
    }
    assert info["tile"] == [72, 72] and info["tiles"] > 1 and info["batch_size"] == 1
    assert all(b * h * w * per_pixel <= budget for b, _, h, w in module.calls)
    np.testing.assert_allclose(tiled.phase, whole.phase, atol=1e-6)

    # without max_memory, the limit is a share of the free memory
    monkeypatch.setattr(deep, "free_memory", lambda device: int(budget / deep.MEMORY_FRACTION))
    default = retrieve_deep(image, model=(module, card), tile=None)
    assert default.info["tile"] == [72, 72] and default.info["memory"]["limit_bytes"] == budget
    np.testing.assert_array_equal(default.phase, tiled.phase)

    # a tile asked for is kept when it fits, and more tiles go into one call
    small = retrieve_deep(image, model=(module, card), tile=32, batch_size=8, max_memory=budget)
    assert small.info["tile"] == [32, 32] and small.info["batch_size"] == 6
    assert not small.info["memory"]["tile_reduced"]
    with pytest.raises(InputError, match=r"Not enough memory.*64x64 px tile.*max_memory"):
        retrieve_deep(image, model=(module, card), max_memory=int(per_pixel * 32 * 32))
    with pytest.raises(InputError, match="max_memory"):
        retrieve_deep(image, model=(module, card), max_memory=0)


def test_a_stack_too_large_for_the_free_memory_is_refused_before_copying(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from napari_qpi.retrieval import deep

    stack = rng.normal(size=(3, 64, 64)).astype(np.float32)
    needed = 4 * deep.HOST_COPIES * stack.size
    monkeypatch.setattr(deep, "free_host_memory", lambda: needed - 1)
    with pytest.raises(InputError, match=r"\(3, 64, 64\) needs about .* plane by plane"):
        retrieve_deep(stack, model=standin())
    assert retrieve_deep(stack[0], model=standin()).phase.shape == (64, 64)
    monkeypatch.setattr(deep, "free_host_memory", lambda: needed)
    assert retrieve_deep(stack, model=standin()).phase.shape == stack.shape


def test_odd_sizes_are_padded_and_cropped(rng: np.random.Generator) -> None:
    module, card = standin()
    image = rng.normal(size=(37, 53)).astype(np.float32)
    result = retrieve_deep(image, model=(module, card))
    assert result.phase.shape == (37, 53) and result.phase.dtype == np.float32
    assert module.calls == [(1, 1, 40, 56)]
    assert result.pixel_size_factor == 1.0 and result.info["padded_shape"] == [40, 56]


def test_stacks_are_batched(rng: np.random.Generator) -> None:
    module, card = standin()
    stack = rng.normal(3, 1, size=(5, 33, 40)).astype(np.float32)
    result = retrieve_deep(stack, model=(module, card), batch_size=4)
    assert result.phase.shape == stack.shape and result.phase.dtype == np.float32
    assert [c[0] for c in module.calls] == [4, 1]
    for plane, phase in zip(stack, result.phase, strict=True):
        np.testing.assert_allclose(retrieve_deep(plane, model=(module, card)).phase, phase)
    seen: list[tuple[int, int]] = []
    tiled = retrieve_deep(
        stack, model=(module, card), tile=16, overlap=4, progress=lambda *a: seen.append(a)
    )
    total = len(stack) * tiled.info["tiles"]
    assert seen[-1] == (total, total) and len(seen) == -(-total // 4)
    np.testing.assert_allclose(tiled.phase, result.phase, atol=1e-6)


def test_registered_models_run_by_name(dirs: dict[str, Path], rng: np.random.Generator) -> None:
    save_user_model(tiny_network("prnet"), make_card(name="tiny-prnet", network="prnet"))
    image = rng.normal(100, 10, size=(50, 70)).astype(np.float32)
    result = retrieve_deep(image, model="tiny-prnet", device="cpu")
    assert result.phase.shape == (50, 70) and result.phase.dtype == np.float32
    assert np.isfinite(result.phase).all()
    assert result.info["model"] == "tiny-prnet" and result.info["stride"] == 32
    assert result.info["padded_shape"] == [64, 96]
    module, card = load_model("tiny-prnet", device="cpu")
    again = retrieve_deep(image, model=(module, card))
    np.testing.assert_array_equal(again.phase, result.phase)


def test_background_fit_removes_a_tilt() -> None:
    module, card = standin(linear=True, normalisation={"method": "none"})
    with torch.no_grad():
        module.conv.bias.zero_()
    y, x = np.mgrid[:64, :80]
    tilt = (0.002 * x - 0.003 * y + 0.1).astype(np.float32)
    raw = retrieve_deep(tilt, model=(module, card)).phase
    assert np.abs(raw).max() > 0.1
    flat = retrieve_deep(tilt, model=(module, card), background_order=1)
    assert np.abs(flat.phase).max() < 1e-3
    assert flat.info["background"] == {"order": 1, "mask": "auto"}


def test_training_mode_is_restored(rng: np.random.Generator) -> None:
    module, card = standin()
    module.train()
    retrieve_deep(rng.normal(size=(32, 32)), model=(module, card))
    assert module.training


@pytest.mark.parametrize(
    ("array", "error", "message"),
    [
        (np.full((32, 32), np.nan), InputError, "NaN"),
        (np.zeros((2, 2, 32, 32)), InputError, "shape"),
        (np.zeros((32, 32), dtype=complex), InputError, "complex"),
        (np.zeros((8, 32)), InputError, "too small"),
    ],
)
def test_bad_input_is_refused(array: np.ndarray, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        retrieve_deep(array, model=standin())


def test_modality_mismatch_is_refused() -> None:
    module, card = standin(modality="cdp")
    with pytest.raises(ModelError, match="coded diffraction patterns"):
        retrieve_deep(fringes(), model=(module, card))
    with pytest.raises(ModelError, match="Choose a hologram model"):
        retrieve_deep(
            np.ones((64, 64)), model=(module, card), acquisition=Acquisition(modality="hologram")
        )
    with pytest.raises(InputError, match="already a phase image"):
        retrieve_deep(fringes(), model=standin(), acquisition=Acquisition(modality="phase"))
    multi = card.replace(architecture={"network": "standin", "config": {}, "input_channels": 4})
    with pytest.raises(ModelError, match="needs 4 coded diffraction patterns"):
        retrieve_deep(np.ones((64, 64)), model=(module, multi))
    with pytest.raises(InputError, match="model must be"):
        retrieve_deep(fringes(), model=module)  # type: ignore[arg-type]


def _commands(node: object) -> list[str]:
    """Every ``"command"`` string anywhere in a card's JSON."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k == "command" and isinstance(v, str)]
        return found + [c for v in node.values() for c in _commands(v)]
    if isinstance(node, list):
        return [c for v in node for c in _commands(v)]
    return []


def test_shipped_cards_record_no_absolute_paths() -> None:
    import re
    import shlex

    import napari_qpi.models as models

    cards = sorted((Path(models.__file__).parent / "shipped").glob("*/card.json"))
    assert cards
    for path in cards:
        commands = _commands(json.loads(path.read_text()))
        assert commands, path
        for command in commands:
            words = shlex.split(command.split("  #")[0])
            assert not [w for w in words if re.match(r"^(/|[A-Za-z]:\\)", w)], (path, command)


def test_command_record_writes_paths_that_travel(tmp_path, monkeypatch) -> None:
    import argparse

    from napari_qpi.cli._record import Flags, command_line

    parser = argparse.ArgumentParser()
    flags = Flags(parser, "train")
    flags.add("--out", path="output")
    flags.add("--connectivity", path="input")
    flags.add("--work", record=False)
    flags.add("--overwrite", action="store_true")
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    elsewhere = tmp_path / "elsewhere"
    args = parser.parse_args(
        ["--out", str(elsewhere / "unet"), "--connectivity", str(here / "c.json")]
    )
    args.work = str(elsewhere / "w")
    assert command_line(args) == "napari-qpi train --out unet --connectivity c.json"
    args = parser.parse_args(["--out", "results/unet", "--connectivity", str(elsewhere / "c.json")])
    assert command_line(args) == (
        f"napari-qpi train --out results/unet --connectivity {elsewhere / 'c.json'}"
    )


def test_training_writers_replace_a_model_folder_atomically(dirs, monkeypatch) -> None:
    """search's and distillation's folder writers: a write that fails leaves the old folder."""
    from napari_qpi.models import weights
    from napari_qpi.training.search import save_model_folder

    folder = dirs["tmp"] / "tiny-unet"
    first = tiny_network()
    save_model_folder(folder, first, make_card())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    writes = []

    def card_write_fails(path: Path, data: bytes) -> None:
        writes.append(path.name)
        if path.name == "card.json":
            raise OSError(28, "No space left on device")
        real_write(path, data)

    real_write = weights._write_file
    monkeypatch.setattr(weights, "_write_file", card_write_fails)
    second = build_network("unet", UNET)  # other weights
    with pytest.raises(OSError, match="No space"):
        save_model_folder(folder, second, make_card(), overwrite=True)
    assert writes == ["model.safetensors", "card.json"]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["shipped", "tiny-unet"]
    monkeypatch.undo()
    save_model_folder(folder, second, make_card(), overwrite=True)
    loaded, card = weights.load_model_folder(folder)
    assert card.sha256 != json.loads(before["card.json"])["weights"]["sha256"]
    with torch.no_grad():
        assert torch.equal(loaded(batch()), fp16_copy(second)(batch()))
