"""``synthmed serve``: the runs dashboard, the latent explorer, a visual Turing test for clinicians and GAN Lab.

One FastAPI application (:func:`synthmed.web.app.create_app`) served by uvicorn, bound to 127.0.0.1 unless the
user opens it deliberately. Install with ``pip install 'synthmed[web]'``.

Who may do what:

- the **organiser** (whoever started the server) holds the organiser token that ``synthmed serve`` prints; every
  page but a reader's needs it (a cookie set by the printed link, or the ``X-Synthmed-Token`` header);
- a **reader** holds only a private reader link (``/read/<token>``): they see one image at a time and answer it,
  never the truth, other readers' answers or the results.

State-changing requests need the token in the ``X-Synthmed-Token`` header (a cookie alone is not enough, so a
cross-site form cannot post) and are refused when the browser says they come from another origin. Files are served
by id from an index the server built, never by a path taken from the URL.
"""

from __future__ import annotations
