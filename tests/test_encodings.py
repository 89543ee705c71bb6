"""Distance encodings: the spline's math, the shared envelope, the registry.

Everything runs in float64 on tiny encodings; the spline gets random values and
slopes (not its smooth init) so that each check has something to catch.
"""

import math

import numpy as np
import pytest
import torch

from mlff.encodings import ENCODINGS, SplineEncoding, build_encoding, cosine_envelope, smoothness_loss

CUTOFF = 5.0
SIZE = 8
# Bin spacing 0.3 A (not 1): a slope stored per bin instead of per Angstrom would show.
N_BINS = 16
R_MIN = 0.5
R_MAX = 5.0


pytestmark = pytest.mark.usefixtures("single_thread")


def make_spline(size: int = SIZE, n_bins: int = N_BINS, r_min: float = R_MIN, r_max: float = R_MAX, seed: int = 0):
    """A float64 spline with random values and random (non-zero) slopes."""
    spline = SplineEncoding(size=size, cutoff=CUTOFF, n_bins=n_bins, r_min=r_min, r_max=r_max, init="random")
    spline = spline.to(torch.float64)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        spline.values.copy_(torch.randn(n_bins, size, generator=generator, dtype=torch.float64))
        spline.slopes.copy_(2.0 * torch.randn(n_bins, size, generator=generator, dtype=torch.float64))
    return spline


@pytest.fixture(scope="module")
def spline():
    return make_spline()


def centres(spline: SplineEncoding) -> np.ndarray:
    return np.linspace(spline.r_min, spline.r_max, spline.n_bins)


def value_and_derivative(encoding, x: np.ndarray, raw: bool = True):
    """h(x) [E, s] and dh/dx [E, s] (per Angstrom) by autograd, float64."""
    distances = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    features = encoding.encode(distances) if raw else encoding(distances)
    columns = []
    for k in range(features.shape[1]):
        (gradient,) = torch.autograd.grad(features[:, k].sum(), distances, retain_graph=True)
        columns.append(gradient)
    return features.detach(), torch.stack(columns, dim=1)


# ---------------------------------------------------------------------------
# Spline


def test_spline_parameter_count():
    for size, n_bins in [(1, 2), (8, 16), (5, 33)]:
        spline = SplineEncoding(size=size, cutoff=CUTOFF, n_bins=n_bins)
        assert sum(p.numel() for p in spline.parameters()) == 2 * size * n_bins
        assert spline.values.shape == (n_bins, size)
        assert spline.slopes.shape == (n_bins, size)


def test_spline_interpolates_values_and_slopes_at_centres(spline):
    x = centres(spline)
    value, derivative = value_and_derivative(spline, x)
    torch.testing.assert_close(value, spline.values.detach(), rtol=0, atol=1e-12)
    # g_i is dh/dx in feature units per Angstrom.
    torch.testing.assert_close(derivative, spline.slopes.detach(), rtol=0, atol=1e-9)


def test_spline_value_and_slope_continuous_at_interior_centres(spline):
    eps = 1e-7
    interior = centres(spline)[1:-1]
    left_value, left_slope = value_and_derivative(spline, interior - eps)
    right_value, right_slope = value_and_derivative(spline, interior + eps)
    h = spline.values.detach()[1:-1]
    g = spline.slopes.detach()[1:-1]
    # Value: h_i -/+ eps g_i to first order on both sides.
    torch.testing.assert_close(left_value, h - eps * g, rtol=0, atol=1e-11)
    torch.testing.assert_close(right_value, h + eps * g, rtol=0, atol=1e-11)
    # Slope: the same g_i from both sides (the second derivative jumps, bounded by
    # ~ 6 |dh| / D^2 + 4 |g| / D, a few hundred here, times eps).
    torch.testing.assert_close(left_slope, g, rtol=0, atol=1e-4)
    torch.testing.assert_close(right_slope, g, rtol=0, atol=1e-4)
    torch.testing.assert_close(left_slope, right_slope, rtol=0, atol=1e-4)


def test_spline_matches_hermite_formula_inside_bins(spline):
    """Independent numpy evaluation of the cubic Hermite form at random points."""
    rng = np.random.default_rng(1)
    x = rng.uniform(spline.r_min, spline.r_max, size=50)
    h = spline.values.detach().numpy()
    g = spline.slopes.detach().numpy()
    spacing = (spline.r_max - spline.r_min) / (spline.n_bins - 1)
    expected = []
    for xi in x:
        i = min(int((xi - spline.r_min) // spacing), spline.n_bins - 2)
        t = (xi - (spline.r_min + i * spacing)) / spacing
        c1 = 2 * t**3 - 3 * t**2 + 1
        c3 = t**3 - 2 * t**2 + t
        c4 = t**3 - t**2
        expected.append(c1 * h[i] + (1 - c1) * h[i + 1] + spacing * (c3 * g[i] + c4 * g[i + 1]))
    value = spline.encode(torch.tensor(x, dtype=torch.float64)).detach().numpy()
    np.testing.assert_allclose(value, np.array(expected), rtol=0, atol=1e-12)


def test_spline_derivative_matches_finite_differences_inside_bins(spline):
    rng = np.random.default_rng(2)
    x = rng.uniform(spline.r_min + 0.01, spline.r_max - 0.01, size=40)
    _, derivative = value_and_derivative(spline, x)
    step = 1e-6
    plus = spline.encode(torch.tensor(x + step, dtype=torch.float64)).detach()
    minus = spline.encode(torch.tensor(x - step, dtype=torch.float64)).detach()
    torch.testing.assert_close(derivative, (plus - minus) / (2 * step), rtol=0, atol=1e-6)


def test_spline_extrapolates_linearly_below_r_min(spline):
    h0 = spline.values.detach()[0]
    g0 = spline.slopes.detach()[0]
    assert g0.abs().min() > 1e-3  # the test needs non-zero end slopes to mean anything
    x = np.array([0.0, 0.05, 0.2, 0.37, spline.r_min - 1e-7])
    value, derivative = value_and_derivative(spline, x)
    offsets = torch.tensor(x - spline.r_min, dtype=torch.float64).unsqueeze(-1)
    torch.testing.assert_close(value, h0 + offsets * g0, rtol=0, atol=1e-12)
    # Slope is g_0 everywhere below r_min: never flat, never clamped.
    torch.testing.assert_close(derivative, g0.expand_as(derivative), rtol=0, atol=1e-12)
    assert (derivative.abs() > 1e-3).all()
    # And it joins the spline with matching value and slope just above r_min.
    above_value, above_slope = value_and_derivative(spline, np.array([spline.r_min + 1e-7]))
    torch.testing.assert_close(above_value[0], h0 + 1e-7 * g0, rtol=0, atol=1e-11)
    torch.testing.assert_close(above_slope[0], g0, rtol=0, atol=1e-4)


def test_spline_extrapolates_linearly_above_r_max():
    # r_max inside the cutoff, so the region above it matters.
    spline = make_spline(r_max=3.5, seed=3)
    h_last = spline.values.detach()[-1]
    g_last = spline.slopes.detach()[-1]
    x = np.array([3.5 + 1e-7, 3.9, 4.4, 4.99])
    value, derivative = value_and_derivative(spline, x)
    offsets = torch.tensor(x - 3.5, dtype=torch.float64).unsqueeze(-1)
    torch.testing.assert_close(value, h_last + offsets * g_last, rtol=0, atol=1e-12)
    torch.testing.assert_close(derivative, g_last.expand_as(derivative), rtol=0, atol=1e-12)


def test_spline_gradcheck_wrt_distances(spline):
    # Points well inside bins (away from the centres where d2h/dx2 jumps), and
    # on both linear extensions.
    spacing = spline.spacing
    inside = spline.r_min + spacing * (np.arange(0, spline.n_bins - 1) + np.linspace(0.2, 0.8, spline.n_bins - 1))
    x = np.concatenate([[0.1, 0.3], inside])
    distances = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(spline.encode, (distances,), eps=1e-6, atol=1e-6)
    # Also through forward() (times the envelope) for points inside the cutoff.
    assert torch.autograd.gradcheck(spline, (distances,), eps=1e-6, atol=1e-6)


def test_spline_gradcheck_wrt_parameters():
    spline = make_spline(size=3, n_bins=6, seed=4)
    values = spline.values.detach().clone().requires_grad_(True)
    slopes = spline.slopes.detach().clone().requires_grad_(True)
    # Strip the parameters so encode() reads plain tensors we pass in.
    del spline.values
    del spline.slopes
    distances = torch.tensor([0.2, 0.7, 1.33, 2.02, 2.9, 3.61, 4.45, 4.9], dtype=torch.float64)

    def encode(values: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
        spline.values = values
        spline.slopes = slopes
        return spline.encode(distances)

    assert torch.autograd.gradcheck(encode, (values, slopes), eps=1e-6, atol=1e-6)


def test_smoothness_loss_matches_hand_computation(spline):
    values = spline.values.detach().numpy()
    expected = np.sum(np.linalg.norm(values[1:] - values[:-1], axis=1)) / np.sum(np.linalg.norm(values, axis=1))
    assert spline.regularization().item() == pytest.approx(expected, rel=1e-12)
    assert smoothness_loss(spline.values).item() == pytest.approx(expected, rel=1e-12)
    # Differentiable w.r.t. the values (it is a training loss).
    spline.regularization().backward()
    assert spline.values.grad is not None and spline.values.grad.abs().sum() > 0
    spline.values.grad = None


def test_smoothness_loss_of_constant_values_is_zero():
    values = torch.ones(10, 4, dtype=torch.float64) * 0.7
    assert smoothness_loss(values).item() == 0.0


def test_spline_rbf_init_is_smooth():
    """The default init starts with slopes equal to dh/dx of smooth bumps: the
    spline between centres is then close to those bumps (small smoothness loss)."""
    spline = SplineEncoding(size=8, cutoff=CUTOFF, n_bins=64, r_min=0.0).to(torch.float64)
    rough = SplineEncoding(size=8, cutoff=CUTOFF, n_bins=64, r_min=0.0, init="random")
    assert spline.regularization().item() < 0.5 * rough.regularization().item()
    # Slopes are consistent with the values: centred differences of h match g.
    h = spline.values.detach()
    g = spline.slopes.detach()
    fd = (h[2:] - h[:-2]) / (2 * spline.spacing)
    assert torch.allclose(fd, g[1:-1], atol=0.1 * g.abs().max().item())


def test_spline_rejects_bad_options():
    with pytest.raises(ValueError, match="n_bins"):
        SplineEncoding(size=4, cutoff=CUTOFF, n_bins=1)
    with pytest.raises(ValueError, match="r_max > r_min"):
        SplineEncoding(size=4, cutoff=CUTOFF, r_min=3.0, r_max=2.0)
    with pytest.raises(ValueError, match="wiggly"):
        SplineEncoding(size=4, cutoff=CUTOFF, init="wiggly")


# ---------------------------------------------------------------------------
# Every registered encoding


def build_float64(name: str, size: int | None = None):
    size = (1 if name == "raw" else SIZE) if size is None else size
    options = {"n_bins": N_BINS, "r_min": R_MIN} if name == "spline" else {}
    torch.manual_seed(0)
    return build_encoding(name, size, CUTOFF, **options).to(torch.float64)


@pytest.fixture(scope="module", params=sorted(ENCODINGS))
def encoding(request):
    return build_float64(request.param)


def test_registry_holds_the_paper_encodings():
    assert {"spline", "gaussian", "bessel", "mlp", "raw"} <= set(ENCODINGS)


def test_encoding_output_shape(encoding):
    for num_edges in (0, 1, 7):
        distances = torch.linspace(0.5, 6.0, num_edges, dtype=torch.float64)
        features = encoding(distances)
        assert features.shape == (num_edges, encoding.size)
        assert features.dtype == torch.float64
        assert encoding.encode(distances).shape == (num_edges, encoding.size)
    assert torch.isfinite(encoding(torch.linspace(0.3, 6.0, 50, dtype=torch.float64))).all()


def test_encoding_has_trainable_parameters_only_where_expected(encoding):
    count = sum(p.numel() for p in encoding.parameters())
    if isinstance(encoding, SplineEncoding):
        assert count == 2 * SIZE * N_BINS
    elif type(encoding).__name__ in ("GaussianEncoding", "BesselEncoding", "RawDistanceEncoding"):
        assert count == 0
    else:
        assert count > 0


def test_envelope_makes_features_and_derivative_vanish_at_cutoff(encoding):
    if type(encoding).__name__ == "RawDistanceEncoding":
        pytest.skip("the raw distance is the paper's un-enveloped baseline; the backbones' cutoff scans cover it")
    # Raw features and slopes just inside the cutoff: the scale to compare with.
    x = np.array([CUTOFF - 1e-4, CUTOFF - 1e-3, CUTOFF - 1e-2])
    raw_value, raw_slope = value_and_derivative(encoding, x, raw=True)
    value, slope = value_and_derivative(encoding, x, raw=False)
    delta = torch.tensor(CUTOFF - x, dtype=torch.float64).unsqueeze(-1)
    # 0.5 (cos(pi r / rc) + 1) ~ (pi delta / (2 rc))^2 and its slope ~ pi^2 delta / (2 rc^2).
    envelope = (math.pi * delta / (2 * CUTOFF)) ** 2
    envelope_slope = math.pi**2 * delta / (2 * CUTOFF**2)
    scale = 1.0 + raw_value.abs() + raw_slope.abs()
    assert (value.abs() <= 1.01 * envelope * raw_value.abs() + 1e-15).all()
    assert (slope.abs() <= 1.01 * (envelope * raw_slope.abs() + envelope_slope * raw_value.abs()) + 1e-15).all()
    # Closest point (1e-4 A inside): features ~1e-9, slopes ~1e-5 of the raw scale.
    assert (value.abs()[0] <= 1e-8 * scale[0]).all() and (slope.abs()[0] <= 1e-4 * scale[0]).all()
    # At and beyond the cutoff: exactly zero, with zero gradient.
    outside, outside_slope = value_and_derivative(encoding, np.array([CUTOFF, CUTOFF + 1e-9, CUTOFF + 1.0]), raw=False)
    assert (outside == 0).all() and (outside_slope == 0).all()


def test_encoding_forward_gradcheck(encoding):
    distances = torch.tensor([0.77, 1.09, 1.43, 2.21, 3.08, 4.13, 4.71], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(encoding, (distances,), eps=1e-6, atol=1e-6)


def test_fixed_bases_match_their_formulas():
    r = np.array([0.3, 0.9, 1.5, 2.2, 3.7, 4.6])
    distances = torch.tensor(r, dtype=torch.float64)
    gaussian = build_float64("gaussian")
    means = np.linspace(0.0, CUTOFF, SIZE)
    width = CUTOFF / (SIZE - 1)
    expected = np.exp(-((r[:, None] - means) ** 2) / (2 * width**2))
    np.testing.assert_allclose(gaussian.encode(distances).numpy(), expected, rtol=1e-6, atol=1e-12)
    bessel = build_float64("bessel")
    k = np.arange(1, SIZE + 1)
    expected = np.sqrt(2 / CUTOFF) * np.sin(k * np.pi * r[:, None] / CUTOFF) / r[:, None]
    # Frequencies may be built in float32 before the cast to float64.
    np.testing.assert_allclose(bessel.encode(distances).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_cosine_envelope():
    r = torch.tensor([0.0, CUTOFF / 2, CUTOFF, CUTOFF + 0.5], dtype=torch.float64, requires_grad=True)
    value = cosine_envelope(r, CUTOFF)
    (slope,) = torch.autograd.grad(value.sum(), r)
    expected = 0.5 * (np.cos(np.pi * r.detach().numpy() / CUTOFF) + 1.0)
    expected[r.detach().numpy() >= CUTOFF] = 0.0
    np.testing.assert_allclose(value.detach().numpy(), expected, atol=1e-15)
    assert value[0].item() == 1.0 and value[2].item() == 0.0
    assert slope[0].item() == pytest.approx(0.0, abs=1e-15)
    assert slope[1].item() == pytest.approx(-0.5 * math.pi / CUTOFF, rel=1e-12)
    assert slope[2].item() == 0.0 and slope[3].item() == 0.0


def test_regularization_is_zero_except_for_the_spline(encoding):
    loss = encoding.regularization()
    assert loss.shape == ()
    if isinstance(encoding, SplineEncoding):
        assert loss.item() > 0
    else:
        assert loss.item() == 0.0


# ---------------------------------------------------------------------------
# Registry


def test_registry_rejects_unknown_name():
    with pytest.raises(ValueError, match="splien"):
        build_encoding("splien", SIZE, CUTOFF)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_registry_rejects_unknown_option(name):
    with pytest.raises(ValueError, match="n_binz") as error:
        build_encoding(name, SIZE, CUTOFF, n_binz=3)
    assert name in str(error.value)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_registry_rejects_bad_size_and_cutoff(name):
    with pytest.raises(ValueError, match="size"):
        build_encoding(name, 0, CUTOFF)
    with pytest.raises(ValueError, match="cutoff"):
        build_encoding(name, SIZE, -1.0)


def test_registry_rejects_bad_spline_option_values():
    with pytest.raises(ValueError, match="n_bins"):
        build_encoding("spline", SIZE, CUTOFF, n_bins=1)
    with pytest.raises(ValueError, match="wiggly"):
        build_encoding("spline", SIZE, CUTOFF, init="wiggly")


def test_registry_passes_options_through():
    spline = build_encoding("spline", 4, CUTOFF, n_bins=10, r_min=0.25, r_max=4.0)
    assert isinstance(spline, SplineEncoding)
    assert (spline.n_bins, spline.r_min, spline.r_max, spline.size, spline.cutoff) == (10, 0.25, 4.0, 4, CUTOFF)
