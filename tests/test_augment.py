"""DiffAugment: shapes, reproducibility, differentiability, and what each transform does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from synthmed.augment import diff_augment, parse_policy, random_mirror

POLICIES = ["color", "translation", "cutout", "translation,cutout,color", ""]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("shape", [(4, 3, 16, 16), (4, 1, 28, 20), (2, 1, 8, 8, 8)])
def test_shape_preserved(policy: str, shape: tuple[int, ...]) -> None:
    assert diff_augment(torch.randn(shape), policy).shape == shape


def test_deterministic_under_seed() -> None:
    x = torch.randn(6, 3, 16, 16)
    torch.manual_seed(1)
    a = diff_augment(x)
    torch.manual_seed(1)
    b = diff_augment(x)
    torch.manual_seed(2)
    c = diff_augment(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "translation,cutout,color"])
def test_gradient_flows_to_input(policy: str) -> None:
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    diff_augment(x, policy).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_is_a_zero_filled_shift() -> None:
    x = torch.rand(16, 1, 16, 16) + 0.5  # strictly positive, so zero fill is visible
    out = diff_augment(x, "translation")
    padded = F.pad(x, [2, 2, 2, 2])  # shifts are at most 16 // 8 = 2 pixels
    shifts = []
    for i in range(16):
        # out[h, w] = x[h + dy, w + dx] for exactly one (dy, dx) in [-2, 2]^2
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(out[i], padded[i, :, 2 + dy : 18 + dy, 2 + dx : 18 + dx])
        ]
        assert len(found) == 1
        shifts.append(found[0])
    assert any(s != (0, 0) for s in shifts) and len(set(shifts)) > 1


def test_cutout_zeroes_a_half_size_square() -> None:
    x = torch.rand(16, 2, 16, 16) + 0.5
    out = diff_augment(x, "cutout")
    for i in range(16):
        hole = out[i, 0] == 0
        assert torch.equal(hole, out[i, 1] == 0)  # same hole in every channel
        assert torch.equal(out[i][:, ~hole], x[i][:, ~hole])  # untouched elsewhere
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        # a (clipped) 8x8 square: a full rectangle, at most 8 on a side, at least 4 (centre inside the image)
        assert hole.sum() == len(rows) * len(cols)
        assert 4 <= len(rows) <= 8 and 4 <= len(cols) <= 8
    assert (out == 0).flatten(1).any(1).all()


def test_rgb_color_is_brightness_saturation_contrast() -> None:
    x = torch.rand(5, 3, 8, 8)
    torch.manual_seed(0)
    out = diff_augment(x, "color")
    torch.manual_seed(0)
    y = x + (torch.rand(5, 1, 1, 1) - 0.5)  # brightness U(-0.5, 0.5)
    pixel_mean = y.mean(dim=1, keepdim=True)
    y = (y - pixel_mean) * (torch.rand(5, 1, 1, 1) * 2) + pixel_mean  # saturation U(0, 2)
    image_mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - image_mean) * (torch.rand(5, 1, 1, 1) + 0.5) + image_mean  # contrast U(0.5, 1.5)
    torch.testing.assert_close(out, y)


def test_grey_color_is_brightness_then_contrast() -> None:
    # For one channel, saturation is skipped: exactly two per-sample draws, brightness then contrast.
    x = torch.rand(5, 1, 8, 8)
    torch.manual_seed(0)
    out = diff_augment(x, "color")
    torch.manual_seed(0)
    b = torch.rand(5, 1, 1, 1) - 0.5  # U(-0.5, 0.5)
    c = torch.rand(5, 1, 1, 1) + 0.5  # U(0.5, 1.5)
    y = x + b
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(out, (y - mean) * c + mean)


def test_grey_and_3d_full_policy() -> None:
    for shape in [(3, 1, 28, 28), (2, 1, 8, 16, 16)]:
        x = torch.rand(shape, requires_grad=True)
        out = diff_augment(x)
        out.sum().backward()
        assert out.shape == shape and torch.isfinite(out).all() and x.grad is not None


def test_channels_last_input() -> None:
    x = torch.randn(4, 3, 16, 16)
    torch.manual_seed(3)
    a = diff_augment(x)
    torch.manual_seed(3)
    b = diff_augment(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b)


def test_parse_policy() -> None:
    assert parse_policy("translation, cutout,color") == ("translation", "cutout", "color")
    assert parse_policy("") == ()
    with pytest.raises(
        ValueError, match="unknown DiffAugment policy 'colour'.*valid: color, translation, cutout"
    ):
        parse_policy("colour,cutout")
    x = torch.randn(2, 1, 8, 8)
    assert diff_augment(x, "") is x


@pytest.mark.parametrize("shape", [(64, 1, 6, 5), (32, 2, 3, 4, 5)])
def test_random_mirror_flips_about_half_of_the_samples_left_right(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    torch.manual_seed(0)
    out = random_mirror(x)
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    assert all(k != f for k, f in zip(kept, flipped, strict=True)), "each sample is either itself or its mirror"
    assert 0.25 * len(x) < sum(flipped) < 0.75 * len(x)
    torch.manual_seed(0)
    assert torch.equal(random_mirror(x), out), "the global RNG decides, so a seed reproduces it"
