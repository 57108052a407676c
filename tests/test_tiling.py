"""Sliding-window inference (synthmed.ops.tiling) against whole-image calls, on hand-checked cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from synthmed.ops.tiling import blend_window, sliding_window, tile_starts


def test_tile_starts_examples() -> None:
    assert tile_starts(10, 4, 1) == [0, 3, 6]
    assert tile_starts(4, 4, 0) == [0]
    assert tile_starts(3, 4, 2) == [0]
    assert tile_starts(9, 4, 2) == [0, 2, 4, 5]
    assert tile_starts(8, 4, 0) == [0, 4]
    assert tile_starts(37, 16, 4) == [0, 12, 21]


@pytest.mark.parametrize(("length", "tile", "overlap"), [(9, 4, 2), (37, 16, 4), (50, 16, 4), (100, 7, 3), (17, 16, 0)])
def test_tile_starts_cover_with_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    for a, b in zip(starts, starts[1:], strict=False):
        assert a < b and a + tile - b >= overlap


@pytest.mark.parametrize(("tile", "overlap"), [(4, 4), (4, 5), (4, -1)])
def test_tile_starts_rejects_bad_overlap(tile: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(10, tile, overlap)


@pytest.mark.parametrize("mode", ["linear", "cosine", "constant"])
@pytest.mark.parametrize(("tile", "overlap"), [(16, 4), (8, 7), (5, 2), (4, 0)])
def test_blend_window_shape(mode: str, tile: int, overlap: int) -> None:
    w = blend_window(tile, overlap, mode)
    assert w.shape == (tile,)
    assert torch.equal(w, w.flip(0))
    assert (w > 0).all() and (w <= 1).all()
    assert w[tile // 2] == 1 and w[(tile - 1) // 2] == 1


def test_blend_window_values() -> None:
    # Ramp (i + 1) / (overlap + 1) over 3 px at each end.
    assert torch.allclose(blend_window(8, 3, "linear"), torch.tensor([0.25, 0.5, 0.75, 1, 1, 0.75, 0.5, 0.25]))
    cos = blend_window(8, 3, "cosine")
    assert torch.allclose(cos[:3], torch.tensor([0.5 - 0.5 * 0.5**0.5, 0.5, 0.5 + 0.5 * 0.5**0.5]))
    assert torch.equal(blend_window(6, 2, "constant"), torch.ones(6))
    with pytest.raises(ValueError, match="mode"):
        blend_window(6, 2, "gaussian")


def _conv_fn(in_channels: int = 1, out_channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1)
    return conv.eval()


def _far_from_tile_edges(length: int, starts: list[int], tile: int, margin: int) -> torch.Tensor:
    """Pixels more than ``margin`` px from every tile edge lying inside the image (image borders do not count)."""
    keep = torch.ones(length, dtype=torch.bool)
    for s in starts:
        for edge in (s, s + tile - 1):
            if 0 < edge < length - 1:
                keep[max(edge - margin, 0):edge + margin + 1] = False
    return keep


def _single_tile(length: int, starts: list[int], tile: int) -> torch.Tensor:
    count = torch.zeros(length, dtype=torch.int64)
    for s in starts:
        count[s:s + tile] += 1
    return count == 1


@pytest.mark.parametrize("mode", ["linear", "cosine", "constant"])
def test_identity_is_exact(mode: str) -> None:
    image = torch.randn(2, 1, 37, 50)
    out = sliding_window(lambda x: x, image, tile=16, overlap=4, mode=mode, batch_size=3)
    # Weighted averages of one value are the value up to rounding; single-tile pixels exactly.
    torch.testing.assert_close(out, image, rtol=0, atol=1e-6)
    ys, xs = tile_starts(37, 16, 4), tile_starts(50, 16, 4)
    single = _single_tile(37, ys, 16)[:, None] & _single_tile(50, xs, 16)[None, :]
    assert single.any()
    assert torch.equal(out[..., single], image[..., single])


def test_conv_matches_whole_image_and_single_tiles_exactly() -> None:
    conv = _conv_fn(1, 3)  # also changes the channel count 1 -> 3
    image = torch.randn(1, 1, 37, 50)
    out = sliding_window(conv, image, tile=16, overlap=4, batch_size=1)
    whole = conv(image).detach()
    assert out.shape == (1, 3, 37, 50)
    ys, xs = tile_starts(37, 16, 4), tile_starts(50, 16, 4)
    # Receptive field 3: pixels farther than 1 px from any inner tile edge see the same context as in the image.
    far = _far_from_tile_edges(37, ys, 16, 1)[:, None] & _far_from_tile_edges(50, xs, 16, 1)[None, :]
    torch.testing.assert_close(out[..., far], whole[..., far], rtol=0, atol=1e-5)
    # A pixel covered by one tile is that tile's output, bit for bit: the top-left tile alone through conv.
    single = _single_tile(37, ys, 16)[:, None] & _single_tile(50, xs, 16)[None, :]
    first_tile = conv(image[..., :16, :16].contiguous()).detach()
    corner = single[:16, :16]
    assert corner.sum() == 12 * 12
    assert torch.equal(out[..., :16, :16][..., corner], first_tile[..., corner])


def test_batches_images_and_tiles_together() -> None:
    image = torch.randn(3, 2, 20, 41)
    calls: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return torch.sin(3 * x) + x**2  # pointwise: tiling must not change anything beyond rounding

    out = sliding_window(fn, image, tile=16, overlap=4, batch_size=4)
    n_tiles = 3 * len(tile_starts(20, 16, 4)) * len(tile_starts(41, 16, 4))
    assert sum(calls) == n_tiles and max(calls) == 4
    torch.testing.assert_close(out, fn(image), rtol=0, atol=1e-5)


def test_side_smaller_than_tile_is_padded_and_cropped() -> None:
    conv = _conv_fn()
    image = torch.randn(1, 1, 10, 40)  # H < tile < W
    out = sliding_window(conv, image, tile=16, overlap=4)
    assert out.shape == (1, 1, 10, 40)
    whole = conv(image).detach()
    xs = tile_starts(40, 16, 4)
    far = _far_from_tile_edges(40, xs, 16, 1)
    # Rows 0..8 keep their 3 x 3 context (row 9's lower neighbour is the reflection, not zero padding).
    torch.testing.assert_close(out[..., :9, far], whole[..., :9, far], rtol=0, atol=1e-5)


def test_small_image_is_one_call() -> None:
    conv = _conv_fn()
    image = torch.randn(2, 1, 12, 16)
    calls: list[tuple[int, ...]] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return conv(x)

    out = sliding_window(fn, image, tile=16, overlap=4)
    assert calls == [(2, 1, 12, 16)]
    assert torch.equal(out, conv(image).detach())


def test_multiple_pads_by_reflection_then_crops() -> None:
    conv = _conv_fn()
    image = torch.randn(1, 1, 13, 10)
    seen: list[tuple[int, ...]] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return conv(x)

    out = sliding_window(fn, image, tile=16, overlap=4, multiple=8)
    assert seen == [(1, 1, 16, 16)]
    padded = F.pad(image, (0, 6, 0, 3), mode="reflect")
    assert torch.equal(out, conv(padded).detach()[..., :13, :10])


def test_multiple_when_tiling() -> None:
    image = torch.randn(1, 1, 30, 30)
    with pytest.raises(ValueError, match="multiple"):
        sliding_window(lambda x: x, image, tile=12, overlap=4, multiple=8)
    seen: set[tuple[int, ...]] = set()

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.add(tuple(x.shape[-2:]))
        return x

    torch.testing.assert_close(sliding_window(fn, image, tile=16, overlap=4, multiple=8), image)
    assert seen == {(16, 16)}


def test_bad_fn_output() -> None:
    with pytest.raises(ValueError, match="fn must map"):
        sliding_window(lambda x: x[..., :-1], torch.randn(1, 1, 30, 30), tile=16, overlap=4)
