"""`mlff inspect`: embedding metrics against hand computations, similarity, sampling, and the CLI end to end."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import build_tiny_model, tiny_config
from scipy.stats import spearmanr

from mlff._version import __version__
from mlff.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, atomic_torch_save
from mlff.cli.main import main
from mlff.encodings import SplineEncoding, build_encoding
from mlff.inspect import (
    diversity,
    find_encodings,
    layer_metrics,
    load_inspected_model,
    model_similarity,
    nonlinearity,
    nonmonotonicity,
    normalized_derivative,
    plots,
    sample_layer,
    similarity_matrix,
    smoothness,
)
from mlff.inspect import embeddings as embeddings_module

pytestmark = pytest.mark.usefixtures("single_thread")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def hand_nonlinearity(x, h):
    """1 - mean_j Pearson^2(h_j, x), with numpy's corrcoef."""
    return 1.0 - np.mean([np.corrcoef(x, h[:, j])[0, 1] ** 2 for j in range(h.shape[1])])


def hand_diversity(h):
    """1 - mean over pairs j < k of Pearson^2(h_j, h_k), with numpy's corrcoef."""
    pairs = [(j, k) for j in range(h.shape[1]) for k in range(j + 1, h.shape[1])]
    return 1.0 - np.mean([np.corrcoef(h[:, j], h[:, k])[0, 1] ** 2 for j, k in pairs])


# Metrics of hand-made embeddings


def test_polynomial_embedding_matches_hand_computation():
    x = np.linspace(0.05, 2.0, 300)
    h = np.stack([x, x**2, x**3], axis=1)
    assert nonmonotonicity(x, h) == pytest.approx(0.0, abs=1e-12)
    assert nonlinearity(x, h) == pytest.approx(hand_nonlinearity(x, h), rel=1e-10)
    assert diversity(h) == pytest.approx(hand_diversity(h), rel=1e-10)
    # x^2 and x^3 are nearly linear in x on this range: a small but nonzero non-linearity.
    assert 0.0 < nonlinearity(x, h) < 0.1


def test_metrics_accept_torch_tensors():
    x = torch.linspace(0.05, 2.0, 300, dtype=torch.float64)
    h = torch.stack([x, x**2, x**3], dim=1)
    assert nonlinearity(x, h) == pytest.approx(nonlinearity(x.numpy(), h.numpy()), rel=1e-12)
    assert diversity(h) == pytest.approx(diversity(h.numpy()), rel=1e-12)


def test_a_non_monotone_dimension_matches_spearman_by_hand():
    x = np.linspace(0.0, 1.0, 401)
    h = np.stack([np.exp(-x), (x - 0.3) ** 2], axis=1)
    hand_spearman = [spearmanr(x, h[:, j]).statistic ** 2 for j in range(2)]
    assert nonmonotonicity(x, h) == pytest.approx(1.0 - np.mean(hand_spearman), rel=1e-10)
    assert nonmonotonicity(x, h) > 0.1
    assert nonlinearity(x, h) == pytest.approx(hand_nonlinearity(x, h), rel=1e-10)


def test_a_symmetric_bump_is_uncorrelated_with_distance():
    steps = np.arange(201)
    x = steps / 200.0
    # (x - 0.5)^2 in exact integers, so mirror-image distances tie exactly in rank.
    h = np.stack([x, (steps - 100.0) ** 2], axis=1)
    # The linear dimension contributes rho^2 = 1, the symmetric one rho^2 = 0 under both correlations.
    assert nonlinearity(x, h) == pytest.approx(0.5, abs=1e-12)
    assert nonmonotonicity(x, h) == pytest.approx(0.5, abs=1e-12)


def test_identical_dimensions_are_not_diverse():
    x = np.linspace(0.1, 3.0, 200)
    assert diversity(np.stack([np.sin(2 * x), np.sin(2 * x)], axis=1)) == pytest.approx(0.0, abs=1e-12)
    assert diversity(np.stack([x, 2.0 * x + 1.0], axis=1)) == pytest.approx(0.0, abs=1e-12)
    h = np.stack([x, x, np.sin(3 * x)], axis=1)
    r2 = np.corrcoef(x, np.sin(3 * x))[0, 1] ** 2
    assert diversity(h) == pytest.approx(1.0 - (1.0 + 2.0 * r2) / 3.0, rel=1e-10)
    assert diversity(h) == pytest.approx(hand_diversity(h), rel=1e-10)


def test_a_constant_dimension_counts_as_uncorrelated():
    x = np.linspace(0.0, 1.0, 50)
    h = np.stack([x, np.full_like(x, 3.0)], axis=1)
    assert nonlinearity(x, h) == pytest.approx(0.5)
    assert diversity(h) == pytest.approx(1.0)


def test_metrics_reject_bad_shapes():
    x = np.linspace(0.0, 1.0, 10)
    with pytest.raises(ValueError, match="n_points, s"):
        nonlinearity(x, x)
    with pytest.raises(ValueError, match="distances must have shape"):
        nonlinearity(x[:5], np.ones((10, 2)))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        diversity(x[:, None])


def test_smoothness_by_hand_and_as_the_spline_loss():
    values = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # sum ||h_{i+1} - h_i|| = 0 + sqrt(2); sum ||h_i|| = 3.
    assert smoothness(values) == pytest.approx(1.0 - np.sqrt(2.0) / 3.0, rel=1e-12)
    spline = SplineEncoding(size=4, cutoff=5.0, n_bins=8, init="random").double()
    assert smoothness(spline.values) == pytest.approx(1.0 - spline.regularization().item(), rel=1e-12)


def test_normalized_derivative():
    x = np.linspace(0.0, 1.0, 101)
    slopes = np.stack([np.cos(3 * x), np.ones_like(x)], axis=1)
    result = normalized_derivative(slopes)
    np.testing.assert_allclose(result[:, 0], np.abs(np.cos(3 * x)) / np.cos(3 * x).std())
    assert np.isnan(result[:, 1]).all()


# Similarity


def test_similarity_is_symmetric_with_a_unit_diagonal():
    x = np.linspace(0.1, 4.0, 300)
    a = [np.stack([x, np.sin(x), np.exp(-x)], axis=1)]
    b = [np.stack([np.cos(2 * x), x**2], axis=1)]
    c = [np.stack([np.sin(5 * x), np.log(x), np.sqrt(x), np.cos(x)], axis=1)]
    raw, normalised = similarity_matrix([a, b, c])
    np.testing.assert_allclose(raw, raw.T)
    np.testing.assert_allclose(normalised, normalised.T)
    np.testing.assert_allclose(np.diag(normalised), 1.0)
    expected = np.mean([[np.corrcoef(a[0][:, j], b[0][:, k])[0, 1] ** 2 for k in range(2)] for j in range(3)])
    assert raw[0, 1] == pytest.approx(expected, rel=1e-10)
    assert normalised[0, 1] == pytest.approx(expected / np.sqrt(raw[0, 0] * raw[1, 1]), rel=1e-10)
    assert not np.allclose(normalised, 1.0)


def test_a_permuted_rescaled_copy_is_fully_similar():
    x = np.linspace(0.1, 4.0, 300)
    h = np.stack([x, np.sin(x), np.exp(-x)], axis=1)
    copy = h[:, [2, 0, 1]] * np.array([3.0, -1.0, 0.5]) + 7.0
    raw, normalised = similarity_matrix([[h], [copy]])
    assert normalised[0, 1] == pytest.approx(1.0, rel=1e-10)
    assert raw[0, 1] == pytest.approx(raw[0, 0], rel=1e-10)


def test_layers_pair_by_index_over_the_common_count():
    x = np.linspace(0.1, 4.0, 200)
    first, second = np.stack([x, np.sin(x)], axis=1), np.stack([np.cos(x), x**3], axis=1)
    two_layers, one_layer = [first, second], [first]
    assert model_similarity(two_layers, one_layer) == pytest.approx(model_similarity([first], [first]))
    raw, normalised = similarity_matrix([two_layers, one_layer])
    assert normalised[0, 1] == pytest.approx(1.0)
    assert raw[0, 0] == pytest.approx(model_similarity(two_layers, two_layers))


# Encodings out of models


def test_potential_and_eager_model_sample_the_same_encoding(potential_file):
    potential = load_inspected_model(potential_file)
    eager = find_encodings(build_tiny_model())
    assert potential.source == "potential" and potential.backbone == "egnn"
    assert [layer.name for layer in potential.layers] == [layer.name for layer in eager] == ["backbone.encoding"]
    assert potential.layers[0].kind == "spline" and potential.layers[0].distance_range == (0.0, 5.0)
    from_file, from_model = sample_layer(potential.layers[0], 50), sample_layer(eager[0], 50)
    np.testing.assert_allclose(from_file.values, from_model.values, rtol=1e-12)
    np.testing.assert_allclose(from_file.derivatives, from_model.derivatives, rtol=1e-12)
    assert from_file.values.shape == (50, 8)


@pytest.mark.parametrize("backbone", ["egnn", "transformer", "et"])
def test_every_backbone_carries_one_encoding(backbone):
    (layer,) = find_encodings(build_tiny_model(backbone=backbone))
    assert layer.name == "backbone.encoding" and layer.kind == "spline" and layer.size == 8


def test_sampled_derivative_is_the_spline_slope_at_the_bin_centres():
    torch.manual_seed(0)
    spline = SplineEncoding(size=3, cutoff=5.0, n_bins=6, init="random").double()
    with torch.no_grad():
        spline.slopes.normal_()
    (layer,) = find_encodings(spline)
    sampled = sample_layer(layer, n_points=5 * 20 + 1)
    np.testing.assert_allclose(sampled.derivatives[::20], spline.slopes.detach().numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(sampled.values[::20], spline.values.detach().numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(sampled.bin_values, spline.values.detach().numpy())


def test_non_spline_encodings_use_a_documented_range():
    (layer,) = find_encodings(build_encoding("bessel", 6, 4.0))
    assert layer.kind == "bessel" and layer.distance_range == (embeddings_module.NON_SPLINE_R_MIN_A, 4.0)
    sampled = sample_layer(layer, 100)
    assert np.isfinite(sampled.values).all() and sampled.bin_values is None


def test_a_single_feature_encoding_has_no_diversity_and_still_plots(tmp_path):
    (layer,) = find_encodings(build_encoding("gaussian", 1, 5.0))
    sampled = sample_layer(layer, 100)
    metrics = layer_metrics(sampled)
    assert metrics["diversity"] is None and metrics["smoothness"] is None
    assert metrics["nonlinearity"] == pytest.approx(hand_nonlinearity(sampled.distances, sampled.values))
    for plot in (plots.plot_dimensions, plots.plot_bin_pca, plots.plot_derivative):
        path = plot([sampled], "gaussian, s = 1", tmp_path / f"{plot.__name__}.png")
        assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_files_that_are_not_models_are_refused(tmp_path, monkeypatch, potential_file):
    text = tmp_path / "notes.pt"
    text.write_text("not a model")
    with pytest.raises(ValueError, match="neither an mlff potential file nor an mlff training checkpoint"):
        load_inspected_model(text)
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_inspected_model(tmp_path / "absent.pt")
    monkeypatch.setattr(embeddings_module, "find_encodings", lambda module: [])
    with pytest.raises(ValueError, match="holds no distance encoding"):
        load_inspected_model(potential_file)


# The CLI end to end


@pytest.fixture
def checkpoint(tmp_path):
    """A checkpoint after mlff.checkpoint's layout whose EMA encoding is the tiny model's plus noise."""
    raw, ema = build_tiny_model(seed=0), build_tiny_model(seed=1)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        values = ema.backbone.encoding.values
        values.add_(0.5 * torch.randn(values.shape, generator=generator, dtype=values.dtype))
    contents = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "mlff_version": __version__,
        "config": {"model": dataclasses.asdict(tiny_config())},
        "species": raw.species,
        "element_energies_ev": raw.element_energies()[raw.species].tolist(),
        "energy_scale_ev": float(raw.energy_scale),
        "model_state": raw.state_dict(),
        "ema_state": ema.state_dict(),
    }
    path = tmp_path / "run" / "best.pt"
    atomic_torch_save(contents, path)
    return path, ema


def test_cli_inspects_one_checkpoint_into_the_default_folder(tmp_path, monkeypatch, checkpoint, capsys):
    path, ema = checkpoint
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", str(path), "--points", "200"]) == 0
    out = capsys.readouterr().out
    assert "run-best" in out and "backbone.encoding" in out and "smoothness" in out
    folder = tmp_path / "runs" / "inspect" / "run-best"
    for kind in ("dimensions", "bins_pca", "derivative"):
        assert (folder / f"run-best_{kind}.png").read_bytes().startswith(PNG_SIGNATURE)
    report = json.loads((folder / "metrics.json").read_text())
    (model,) = report["models"]
    assert model["source"] == "checkpoint" and model["weights"] == "ema" and report["n_points"] == 200
    metrics = model["layers"][0]["metrics"]
    x = np.linspace(0.0, 5.0, 200)
    h = ema.backbone.encoding.encode(torch.as_tensor(x)).detach().numpy()
    assert metrics["nonlinearity"] == pytest.approx(hand_nonlinearity(x, h), rel=1e-8)
    assert metrics["diversity"] == pytest.approx(hand_diversity(h), rel=1e-8)
    assert metrics["smoothness"] == pytest.approx(1.0 - ema.backbone.encoding.regularization().item(), rel=1e-8)
    assert not (folder / "similarity.json").exists()


def test_cli_compares_several_models(tmp_path, checkpoint, potential_file, spring_potential_file, capsys):
    path, ema = checkpoint
    output = tmp_path / "out"
    models = [str(path), str(potential_file), str(spring_potential_file), str(potential_file)]
    assert main(["inspect", *models, "-o", str(output), "--points", "300"]) == 0
    out = capsys.readouterr().out
    assert "similarity" in out and "gaussian" in out
    pngs = sorted(p.name for p in output.glob("*.png"))
    assert len(pngs) == 4 * 3 + 1 and "similarity.png" in pngs
    assert all((output / name).read_bytes().startswith(PNG_SIGNATURE) for name in pngs)
    similarity = json.loads((output / "similarity.json").read_text())
    assert similarity["labels"] == ["run-best", "tiny", "spring", "tiny #2"]
    # The gaussian spring potential's range [0.5 A, cutoff] limits the common range.
    assert similarity["distance_range_a"] == [0.5, 5.0]
    normalised, raw = np.array(similarity["normalized"]), np.array(similarity["raw"])
    np.testing.assert_allclose(normalised, normalised.T)
    np.testing.assert_allclose(np.diag(normalised), 1.0)
    assert normalised[1, 3] == pytest.approx(1.0)
    x = np.linspace(0.5, 5.0, 300)
    h_checkpoint = ema.backbone.encoding.encode(torch.as_tensor(x)).detach().numpy()
    h_potential = build_tiny_model().backbone.encoding.encode(torch.as_tensor(x)).detach().numpy()
    expected = np.mean([[np.corrcoef(a, b)[0, 1] ** 2 for b in h_potential.T] for a in h_checkpoint.T])
    assert raw[0, 1] == pytest.approx(expected, rel=1e-8)
    assert normalised[0, 1] < 1.0
    metrics = json.loads((output / "metrics.json").read_text())
    spring = metrics["models"][2]["layers"][0]
    assert spring["encoding"] == "gaussian" and spring["metrics"]["smoothness"] is None


def test_cli_names_a_file_that_is_no_model(tmp_path, capsys):
    bad = tmp_path / "data.npz"
    np.savez(bad, x=np.zeros(3))
    assert main(["inspect", str(bad), "-o", str(tmp_path / "out")]) == 2
    assert "neither an mlff potential file nor an mlff training checkpoint" in capsys.readouterr().err


def test_labels_of_different_files_are_told_apart_by_their_folders(tmp_path):
    from mlff.inspect.report import unique_labels

    runs = [
        tmp_path / "ethanol" / "spline" / "seed0" / "best.pt",
        tmp_path / "malonaldehyde" / "spline" / "seed0" / "best.pt",
    ]
    potentials = [tmp_path / "a" / "ethanol.pt", tmp_path / "b" / "ethanol.pt", tmp_path / "a" / "ethanol.pt"]
    for path in runs + potentials:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    labels = unique_labels([*runs, *potentials])
    assert labels == [
        "ethanol/spline/seed0-best",
        "malonaldehyde/spline/seed0-best",
        "a/ethanol",
        "b/ethanol",
        "a/ethanol #2",
    ]
