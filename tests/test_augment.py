"""Augmenter: seeded, shape- and dtype-preserving, identity when off, geometry as configured."""

import numpy as np
import pytest

from barenet.config import AugmentConfig
from barenet.data.augment import Augmenter, bilinear, gaussian_matrix


def blobs(n=8, seed=0):
    """(n, 28, 28) float32 images with a bright 6x6 square near the middle."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), np.float32)
    x[:, 11:17, 11:17] = rng.uniform(0.5, 1.0, (n, 1, 1)).astype(np.float32)
    return x


def center_of_mass(x):
    rows = np.arange(x.shape[1])[None, :, None]
    cols = np.arange(x.shape[2])[None, None, :]
    mass = x.sum(axis=(1, 2))
    return (x * rows).sum(axis=(1, 2)) / mass, (x * cols).sum(axis=(1, 2)) / mass


FULL = AugmentConfig(shift=2.0, rotate=10.0, scale=0.1, elastic_alpha=34.0, elastic_sigma=4.0)


def test_seeded_determinism():
    x = blobs()
    a = Augmenter(FULL)
    first = a(x, np.random.default_rng(7))
    assert np.array_equal(first, a(x, np.random.default_rng(7)))
    assert not np.array_equal(first, a(x, np.random.default_rng(8)))
    assert not np.array_equal(first, x)


@pytest.mark.parametrize("shape", [(5, 28, 28), (5, 1, 28, 28), (5, 784)])
def test_shape_and_dtype_preserved(shape):
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = Augmenter(FULL)(x, np.random.default_rng(0))
    assert out.shape == shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0            # bilinear stays in [0, 1]


def test_layouts_agree():
    x = blobs(4)
    out3 = Augmenter(FULL)(x, np.random.default_rng(3))
    out2 = Augmenter(FULL)(x.reshape(4, 784), np.random.default_rng(3))
    assert np.array_equal(out3.reshape(4, 784), out2)


def test_identity_when_all_zero():
    x = blobs()
    a = Augmenter(AugmentConfig())
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert a(x, rng) is x
    assert rng.bit_generator.state == state                  # no random numbers consumed


def test_zero_transform_resamples_exactly():
    # rotate ~ 0: the affine map is the identity up to rounding; bilinear at integer points.
    x = blobs()
    out = Augmenter(AugmentConfig(rotate=1e-9))(x, np.random.default_rng(0))
    assert np.allclose(out, x, atol=1e-6)


def test_flip_mirrors_left_right_with_its_probability():
    x = blobs(64)
    x[:, 5:9, 3:6] = 1.0                                        # off-centre: not symmetric
    always = Augmenter(AugmentConfig(flip=1.0))(x, np.random.default_rng(0))
    assert np.allclose(always, x[..., ::-1], atol=1e-6)
    half = Augmenter(AugmentConfig(flip=0.5))(x, np.random.default_rng(0))
    mirrored = np.array([np.allclose(h, m[..., ::-1], atol=1e-6) and not np.allclose(h, m)
                         for h, m in zip(half, x)])
    kept = np.array([np.allclose(h, m, atol=1e-6) for h, m in zip(half, x)])
    assert np.all(mirrored | kept) and 16 < mirrored.sum() < 48


def test_flip_must_be_a_probability():
    from barenet.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="augment.flip"):
        load_config(None, ["augment.flip=1.5"])


def test_erase_replaces_one_rectangle_with_noise():
    x = np.full((200, 28, 28), 0.5, dtype=np.float32)
    out = Augmenter(AugmentConfig(erase=1.0, erase_area=0.3))(x, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == x.shape
    changed = out != x
    areas = changed.sum(axis=(1, 2))
    assert np.all(areas > 0) and np.all(areas <= 0.3 * 784 * 1.2)   # one rectangle each
    assert areas.max() > 0.2 * 784 and areas.min() < 0.05 * 784      # sizes really vary
    for img in changed[:20]:                                         # a filled rectangle
        rows, cols = np.flatnonzero(img.any(axis=1)), np.flatnonzero(img.any(axis=0))
        box = img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert box.mean() > 0.95                                     # noise may hit 0.5
    assert 0.0 <= out.min() and out.max() <= 1.0
    half = Augmenter(AugmentConfig(erase=0.5))(x, np.random.default_rng(1))
    assert 70 < (half != x).any(axis=(1, 2)).sum() < 130


def test_erase_off_draws_nothing_extra():
    # Runs without erasing keep their numbers: the augmenter draws the same random numbers.
    x = blobs(16)
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    out = Augmenter(AugmentConfig(shift=2.0))(x, a)
    assert np.array_equal(out, Augmenter(AugmentConfig(shift=2.0, erase=0.0))(x, b))
    assert a.random() == b.random()


def test_erase_settings_are_checked():
    from barenet.config import ConfigError, load_config

    for bad in ("2", "-0.5"):
        with pytest.raises(ConfigError, match="augment.erase"):
            load_config(None, [f"augment.erase={bad}"])
    with pytest.raises(ConfigError, match="augment.flip"):
        load_config(None, ["augment.flip=-1"])
    with pytest.raises(ConfigError, match="augment.erase_area"):
        load_config(None, ["augment.erase_area=0.01"])


def test_shift_moves_center_of_mass():
    x = blobs(64)
    out = Augmenter(AugmentConfig(shift=3.0))(x, np.random.default_rng(1))
    r0, c0 = center_of_mass(x)
    r1, c1 = center_of_mass(out)
    dr, dc = r1 - r0, c1 - c0
    assert np.all(np.abs(dr) <= 3.0 + 1e-4) and np.all(np.abs(dc) <= 3.0 + 1e-4)
    assert np.abs(dr).max() > 1.0 and np.abs(dc).max() > 1.0  # it really moved
    assert np.allclose(out.sum(axis=(1, 2)), x.sum(axis=(1, 2)), rtol=1e-4)  # nothing cut off


def test_integer_shift_known_value():
    # Sampling at (row - 1, col + 2) moves the image down 1 and left 2.
    x = np.zeros((1, 5, 5), np.float32)
    x[0, 2, 2] = 1.0
    rows, cols = np.meshgrid(np.arange(5.0), np.arange(5.0), indexing="ij")
    out = bilinear(x, (rows - 1.0)[None].astype(np.float32), (cols + 2.0)[None].astype(np.float32))
    assert out[0, 3, 0] == 1.0 and out.sum() == 1.0


def test_rotation_and_scale_keep_center():
    x = blobs(32)
    out = Augmenter(AugmentConfig(rotate=15.0, scale=0.15))(x, np.random.default_rng(2))
    r, c = center_of_mass(out)
    assert np.allclose(r, 13.5, atol=0.2) and np.allclose(c, 13.5, atol=0.2)
    mass_ratio = out.sum(axis=(1, 2)) / x.sum(axis=(1, 2))  # area scales by zoom^2
    assert np.all(mass_ratio > 0.85 ** 2 - 0.05) and np.all(mass_ratio < 1.15 ** 2 + 0.05)


def test_elastic_distortion_is_local_and_bounded():
    x = blobs(16)
    out = Augmenter(AugmentConfig(elastic_alpha=34.0, elastic_sigma=4.0))(
        x, np.random.default_rng(4))
    assert not np.array_equal(out, x)
    r0, c0 = center_of_mass(x)
    r1, c1 = center_of_mass(out)
    assert np.abs(r1 - r0).max() < 3.0 and np.abs(c1 - c0).max() < 3.0


def test_gaussian_matrix_matches_scipy():
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(0).random((3, 28, 20)).astype(np.float32)
    for sigma in (1.0, 4.0):
        ours = gaussian_matrix(28, sigma) @ x @ gaussian_matrix(20, sigma).T
        ref = scipy_ndimage.gaussian_filter(x, (0, sigma, sigma), mode="constant")
        assert np.allclose(ours, ref, atol=1e-6)


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match="augmentation expects"):
        Augmenter(FULL)(np.zeros((2, 3, 28, 28), np.float32), np.random.default_rng(0))


def test_augment_preview_writes_png(tiny_data, tmp_path):
    pytest.importorskip("matplotlib")
    from barenet.app.cli import main

    out = tmp_path / "grid.png"
    code = main(["augment-preview", "--set", "augment.rotate=15", "--set", "augment.shift=2",
                 "--digits", "3", "--copies", "4", "--out", str(out)])
    assert code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_augment_preview_refuses_when_off(tiny_data, tmp_path):
    from barenet.app.cli import main

    assert main(["augment-preview", "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
