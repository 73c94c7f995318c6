"""`RamanClient`: identify spectra, files and folders; list models; run fine-tune jobs.

Every call goes through one `httpx.Client` (connection reuse) and the retry policy of
`raman_client.transport`. Errors from the server raise `RamanAPIError` with the fields of its
problem document; a server that cannot be reached raises `RamanConnectionError`.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from raman_client.errors import RamanAPIError
from raman_client.files import PathLike, Upload, batches, expand_paths, find_spectrum_files
from raman_client.jobs import JobsMixin
from raman_client.payload import SpectrumLike, spectrum_items
from raman_client.progress import ProgressCallback, make_progress
from raman_client.transport import RetryPolicy, Transport
from raman_client.types import ModelInfo, ModelRef, Reference, Result

DEFAULT_URL = "http://127.0.0.1:8000"
MAX_SPECTRA_PER_REQUEST = 256
"""The service's default `RAMAN_MAX_SPECTRA_PER_REQUEST`; larger `identify` calls are split."""
MAX_BATCH_BYTES = 8 * 1024 * 1024
"""Upload batches stay under this many bytes (the service's default body limit is 10 MiB)."""
FILES_FAILED = "files-failed"


class RamanClient(JobsMixin):
    """A synchronous client for one service URL. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 30.0,
        retries: int | RetryPolicy = 4,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`url` defaults to `$RAMAN_URL` or http://127.0.0.1:8000, `api_key` to
        `$RAMAN_API_KEY` (needed only for fine-tune jobs and other mutating calls)."""
        self.url = (url or os.environ.get("RAMAN_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("RAMAN_API_KEY")
        headers = {"Accept": "application/json, application/problem+json"}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        self.http = httpx.Client(
            base_url=self.url, timeout=timeout, headers=headers, transport=transport
        )
        policy = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries=retries)
        self.transport = Transport(self.http, policy)

    def __enter__(self) -> RamanClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.transport.request(method, path, **kwargs)

    # --- identification ---

    def identify(
        self,
        spectra: Collection[SpectrumLike],
        top_k: int = 5,
        model: str | None = None,
        version: str | None = None,
        ids: Sequence[str] | None = None,
        batch: int = MAX_SPECTRA_PER_REQUEST,
    ) -> list[Result]:
        """Identify spectra given as arrays: each item is intensities on the model grid, a
        `(wavenumbers, intensities)` pair at any resolution, or a mapping with those keys.
        A 2-D array `[N, L]` is N on-grid spectra. Large inputs are split into requests of
        `batch` spectra; results keep the input order (ids default to the positions)."""
        items = spectrum_items(spectra, ids)
        results: list[Result] = []
        for start in range(0, len(items), batch):
            body = {"spectra": items[start : start + batch], "top_k": top_k,
                    "model": model, "version": version}  # fmt: skip
            results.extend(_results(self._call("POST", "/v1/identify", json=body)))
        return results

    def identify_spectrum(
        self, wavenumbers: Any, intensities: Any, top_k: int = 5, **kwargs: Any
    ) -> Result:
        """Identify one spectrum measured on its own axis."""
        return self.identify([(wavenumbers, intensities)], top_k=top_k, **kwargs)[0]

    def identify_files(
        self,
        paths: Sequence[PathLike],
        top_k: int = 5,
        model: str | None = None,
        version: str | None = None,
        batch: int = 32,
        progress: bool | ProgressCallback = False,
    ) -> list[Result]:
        """Identify instrument files (folders are expanded). One result per spectrum found;
        a file the server cannot use gets a result with `error` set instead of raising."""
        files = expand_paths(paths)
        return list(self.iter_files(files, top_k, model, version, batch, progress))

    def identify_folder(
        self,
        folder: PathLike,
        top_k: int = 5,
        model: str | None = None,
        version: str | None = None,
        batch: int = 32,
        progress: bool | ProgressCallback = True,
        recursive: bool = True,
    ) -> list[Result]:
        """Identify every spectrum file under `folder`, `batch` files per request."""
        files = find_spectrum_files(folder, recursive)
        return list(self.iter_files(files, top_k, model, version, batch, progress))

    def iter_files(
        self,
        files: Sequence[Path],
        top_k: int = 5,
        model: str | None = None,
        version: str | None = None,
        batch: int = 32,
        progress: bool | ProgressCallback = False,
    ) -> Iterator[Result]:
        """Results batch by batch (for very large folders: nothing accumulates)."""
        bar = make_progress(progress, len(files), "identify")
        try:
            for group in batches(files, max(1, batch), MAX_BATCH_BYTES):
                yield from self._upload([Upload.read(p) for p in group], top_k, model, version)
                bar.update(len(group))
        finally:
            bar.close()

    def _upload(
        self, uploads: list[Upload], top_k: int, model: str | None, version: str | None
    ) -> list[Result]:
        files = [("files", (u.name, u.data, "application/octet-stream")) for u in uploads]
        form = {"top_k": str(top_k)} | _optional(model=model, version=version)
        try:
            return _results(self._call("POST", "/v1/identify/files", files=files, data=form))
        except RamanAPIError as exc:
            if exc.slug != FILES_FAILED or not isinstance(exc.extensions.get("files"), list):
                raise
            # Every file of this batch was refused: report each, keep going with the next batch.
            return [Result.from_dict(f) for f in exc.extensions["files"]]

    # --- models ---

    def models(self) -> list[ModelInfo]:
        """Every model in the server's store, with versions; `default` marks the default one."""
        body = self._call("GET", "/v1/models")
        default = str(body.get("default_model", ""))
        return [ModelInfo.from_dict(m, default) for m in body.get("models", [])]

    def model(self, name: str) -> ModelInfo:
        """One model's description."""
        return ModelInfo.from_dict(self._call("GET", f"/v1/models/{_seg(name)}"))

    def reference(self, model: str, label: str, version: str | None = None) -> Reference:
        """A class's reference spectrum on the model grid."""
        path = f"/v1/models/{_seg(model)}/references/{_seg(label)}"
        return Reference.from_dict(self._call("GET", path, params=_optional(version=version)))

    def ready(self) -> bool:
        """Whether the server has a model loaded (`/v2/health/ready`)."""
        response = self.transport.send("GET", "/v2/health/ready")
        return response.status_code == 200


def _results(body: dict[str, Any]) -> list[Result]:
    model = ModelRef.from_dict(body["model"]) if body.get("model") else None
    return [Result.from_dict(r, model) for r in body.get("results", [])]


def _optional(**values: str | None) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


def _seg(value: str) -> str:
    """One URL path segment (labels may hold spaces, slashes or parentheses)."""
    return quote(value, safe="")
