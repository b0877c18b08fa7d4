"""2-D projections of hidden states: PCA, UMAP (umap-learn) and t-SNE (scikit-learn).

Seeded: the same states give the same picture. UMAP and t-SNE are not linear maps, so every
point set (a sentence's states with their training neighbours, a corpus sample) is fitted whole.
Before them the states are L2-normalised (the neighbour engine's cosine) and reduced to
``PRE_DIMS`` principal components (the usual practice; it also makes them faster).

Single-threaded: t-SNE's OpenMP threads next to a busy server's (2 cores, load 6) made 228
points take 23 s instead of 0.6 s. Computed on request, then kept in a local file cache
addressed by the content (method, parameters and the vectors' bytes):
``$BEAMSCOPE_CACHE/projections`` (default ``~/.cache/beamscope``). The warehouse stays read-only,
a restarted server or another gunicorn worker reuses a projection, and a cached picture can
never be stale: other states are another key.
Callers also keep results in memory (``Warehouse.memo``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

from schemas import ConfigError

PROJECTIONS = {"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE"}  # name in URLs: label
DEFAULT = "pca"
SEED = 0
PRE_DIMS = 30
UMAP_NEIGHBOURS = 15
TSNE_PERPLEXITY = 30.0
TSNE_ITERATIONS = 500
_VERSION = 2  # of the parameters above: part of the cache key


def check_projection(name: str | None) -> str:
    """``name`` as a known projection (None: the default); a ConfigError naming the choices."""
    if name is None or name == "":
        return DEFAULT
    key = str(name).strip().lower().replace("-", "")
    if key not in PROJECTIONS:
        choices = ", ".join(f"{k} ({v})" for k, v in PROJECTIONS.items())
        raise ConfigError(f"unknown projection {str(name)[:40]!r}; choose one of {choices}")
    return key


def axis_titles(method: str) -> tuple[str, str]:
    label = {"pca": "PC", "umap": "UMAP", "tsne": "t-SNE"}[method]
    return f"{label} 1", f"{label} 2"


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """[n, 2] coordinates on the first two principal components of ``vectors`` [n, d]."""
    x = np.asarray(vectors, dtype=np.float64)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    out = x @ vt[:2].T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def project(vectors: np.ndarray, method: str, seed: int = SEED) -> np.ndarray:
    """[n, 2] coordinates of ``vectors`` [n, d] by ``method`` ('pca', 'umap', 'tsne'), seeded;
    UMAP and t-SNE come from the file cache when these vectors were projected before."""
    method = check_projection(method)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if method == "pca" or len(x) < 4:  # too few points for a neighbourhood graph
        return pca_2d(x)
    key = hashlib.sha256(f"{method}:{seed}:{_VERSION}:{x.shape}".encode() + x.tobytes()).hexdigest()
    path = cache_dir() / f"{key[:32]}.npy"
    try:
        return np.load(path)
    except (OSError, ValueError):
        pass
    with threadpool_limits(1):  # OpenMP threads beside a busy server's: 228 points 23 s -> 0.6 s
        xy = np.asarray((_umap if method == "umap" else _tsne)(_prepare(x), seed), dtype=np.float64)
    _save(path, xy)
    return xy


def cache_dir() -> Path:
    return Path(os.environ.get("BEAMSCOPE_CACHE", Path.home() / ".cache" / "beamscope")) / "projections"


def _prepare(x: np.ndarray) -> np.ndarray:
    """Unit rows, then their first ``PRE_DIMS`` principal components."""
    x = x.astype(np.float64) / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    x = x - x.mean(0)
    if x.shape[1] <= PRE_DIMS:
        return x
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:PRE_DIMS].T


def _umap(x: np.ndarray, seed: int) -> np.ndarray:
    """UMAP on exact nearest neighbours found with BLAS: below 4,096 points umap-learn computes
    all distances itself through a Python callable (3,300 points: 8.6 s instead of 2.6 s)."""
    import umap  # ~1.5 s to import; its first fit in a process compiles (numba, ~7 s)
    from sklearn.neighbors import NearestNeighbors

    k = max(2, min(UMAP_NEIGHBOURS, len(x) - 1))
    dists, rows = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)  # each point first
    with warnings.catch_warnings():  # "n_jobs overridden by random_state", "no search index"
        warnings.simplefilter("ignore")
        fit = umap.UMAP(
            n_components=2,
            n_neighbors=k,
            min_dist=0.1,
            random_state=seed,
            init="spectral" if len(x) > k + 2 else "random",
            precomputed_knn=(rows, dists, None),
        )
        return fit.fit_transform(x)


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = max(1.0, min(TSNE_PERPLEXITY, (len(x) - 1) / 3))
    fit = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, max_iter=TSNE_ITERATIONS)
    return fit.fit_transform(x)


def _save(path: Path, xy: np.ndarray) -> None:
    """Into the cache (temporary file + rename); a cache that can't be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.save(f, xy)
        os.replace(tmp, path)
    except OSError:
        pass
