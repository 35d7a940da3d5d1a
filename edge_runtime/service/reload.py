"""Model updates while serving: a new bundle is verified and loaded beside the old one, then swapped in atomically.

::

    model = SwappableClassifier(IntentClassifier.from_bundle("edge/3"))
    service = IntentService(config, model, transport).start()
    reloader = BundleReloader(model, service=service, backend="onnxruntime", public_key=None)
    reloader.load("edge/4")      # raises BundleError / BackendError and keeps edge/3 when edge/4 is bad

The order is what makes it safe; steps 1-3 are :func:`load_verified`, the one way the service loads a bundle
(at start-up, on every update, and for a shadow candidate):

1. the bundle is copied into a private staging directory (mode 0700): only the manifest, its signature and the
   files the manifest lists, never through a link, never blocking on a device or FIFO
   (:func:`~edge_runtime.bundle.stage_bundle`), so nothing can change the files between the check and the load (a
   deployment still unpacking, a tampered file) and nothing unlisted comes along;
2. the copy is verified: the Ed25519 signature when a public key is configured, then the tree (nothing unlisted)
   and every file's sha256;
3. a classifier is loaded from the copy and answers one warm-up text (labels vs output size, and finite scores,
   are checked on load);
4. only then is it *staged*; the next model call of any micro-batcher worker swaps it in, so no batch ever
   mixes models, every reply names the model that produced it (:meth:`SwappableClassifier.predict_with_model`),
   and the old model is closed once its last batch in flight on another worker has finished.

Until step 4 the old model keeps serving; any failure leaves it in place. A staging directory is removed when its
model is closed, and one left behind by a process that died (``bundle-update-<pid>-*``) is removed by the next load.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from ..bundle import Bundle, stage_bundle
from ..errors import BundleNotFoundError

__all__ = ["SwappableClassifier", "BundleReloader", "load_verified", "STAGING_PREFIX"]

log = logging.getLogger(__name__)
#: Staging directories are ``<staging_dir>/bundle-update-<pid>-<random>``.
STAGING_PREFIX = "bundle-update-"


def load_verified(path: str | os.PathLike[str], *, public_key: Any = None, staging_dir: str | None = None,
                  warmup_text: str | None = "hello", **load_kwargs: Any) -> tuple[Any, Callable[[], None]]:
    """Copy the bundle at ``path`` into a private staging directory, verify the copy, load it, warm it up.

    Returns ``(classifier, cleanup)``; ``cleanup()`` removes the copy, to be called once the classifier is closed.
    ``public_key`` (a key or its file) makes the Ed25519 signature required. ``load_kwargs`` go to
    :meth:`IntentClassifier.from_bundle` (``backend``, ``threads``, ...). Raises a
    :class:`~edge_runtime.errors.BundleError` (incl. ``SignatureError``) or ``BackendError``, leaving nothing behind.
    """
    from ..classifier import IntentClassifier

    if not Path(path).is_dir():
        raise BundleNotFoundError(f"bundle directory not found: {path}")
    if public_key is not None and not hasattr(public_key, "verify"):
        from ..signing import load_public_key  # cryptography is imported only when a key is configured

        public_key = load_public_key(public_key)
    parent = Path(staging_dir or tempfile.gettempdir())
    remove_stale_staging(parent)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=parent))
    cleanup = partial(shutil.rmtree, staging, ignore_errors=True)
    classifier = None
    try:
        copy = stage_bundle(path, staging / "bundle")
        if public_key is not None:
            from ..signing import verify_bundle

            bundle = verify_bundle(copy, public_key)
        else:
            bundle = Bundle.load(copy)
        classifier = IntentClassifier.from_bundle(bundle, **load_kwargs)
        if warmup_text:
            classifier.predict_batch([warmup_text])
    except BaseException:
        if classifier is not None:
            classifier.close()
        cleanup()
        raise
    return classifier, cleanup


def remove_stale_staging(parent: Path) -> list[Path]:
    """Remove this user's staging directories under ``parent`` whose process is gone (a crash, a SIGKILL)."""
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(STAGING_PREFIX):
            continue
        pid = entry.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
        except OSError:  # alive but not ours to signal, or unreadable: leave it
            continue
    return removed


class SwappableClassifier:
    """Wraps the serving classifier; :meth:`stage` hands over a replacement taken at the next model call.

    Exposes what :class:`~edge_runtime.service.IntentService` uses: ``predict_batch``, ``predict_with_model``,
    ``name``, ``version``, ``backend``. Safe to call from several worker threads at once. ``on_swap(new)`` runs
    on the worker thread that made the swap, before its call (the service updates its status there).
    """

    def __init__(self, classifier: Any, *, on_swap: Callable[[Any], None] | None = None,
                 cleanup: Callable[[], None] | None = None) -> None:
        self._current = classifier
        self._cleanup = cleanup
        self._staged: tuple[Any, Callable[[], None] | None] | None = None
        self._lock = threading.Lock()
        # Models swapped out while a call on them was still running; closed by the last such call.
        self._retired: list[tuple[Any, Callable[[], None] | None]] = []
        self._calls: dict[int, int] = {}  # id(classifier) -> calls in flight
        self.on_swap = on_swap
        self.swaps = 0

    @property
    def current(self) -> Any:
        return self._current

    def __getattr__(self, name: str) -> Any:
        # labels, tokenizer, bundle, ...: those of the model serving now
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._current, name)

    @property
    def name(self) -> str:
        return str(self._current.name)

    @property
    def version(self) -> str:
        return str(self._current.version)

    @property
    def backend(self) -> Any:
        return self._current.backend

    def stage(self, classifier: Any, cleanup: Callable[[], None] | None = None) -> None:
        """Make ``classifier`` the next one to serve; a classifier staged earlier and not yet taken is closed."""
        with self._lock:
            previous, self._staged = self._staged, (classifier, cleanup)
        if previous is not None:
            _close(*previous)

    def predict_batch(self, texts: Sequence[str]) -> list[Any]:
        return self.predict_with_model(texts)[1]

    def predict_with_model(self, texts: Sequence[str]) -> tuple[Any, list[Any]]:
        """``(classifier, predictions)``: the predictions and the model that made them (a swap may happen on
        another worker before these are answered)."""
        with self._lock:
            staged, self._staged = self._staged, None
            if staged is not None:
                old = self._current
                self._retired.append((old, self._cleanup))
                self._current, self._cleanup = staged
                self.swaps += 1
            model = self._current
            self._calls[id(model)] = self._calls.get(id(model), 0) + 1
        try:
            if staged is not None:
                log.info("model swapped: %s v%s -> %s v%s", old.name, old.version, model.name, model.version)
                if self.on_swap is not None:
                    self.on_swap(model)
            return model, model.predict_batch(texts)
        finally:
            self._release(model)

    def _release(self, model: Any) -> None:
        with self._lock:
            left = self._calls.pop(id(model)) - 1
            if left:
                self._calls[id(model)] = left
            idle = [r for r in self._retired if id(r[0]) not in self._calls]
            self._retired = [r for r in self._retired if id(r[0]) in self._calls]
        for retired in idle:
            _close(*retired)

    def close(self) -> None:
        with self._lock:
            staged, self._staged = self._staged, None
            retired, self._retired = self._retired, []
        for item in ([staged] if staged is not None else []) + retired + [(self._current, self._cleanup)]:
            _close(*item)


def _close(classifier: Any, cleanup: Callable[[], None] | None) -> None:
    try:
        close = getattr(classifier, "close", None)
        if close is not None:
            close()
    finally:
        if cleanup is not None:
            cleanup()


class BundleReloader:
    """Verifies, loads and stages new bundles for a :class:`SwappableClassifier`.

    ``public_key``: an Ed25519 public key (or its file) that bundles must be signed with, or None for sha256
    checks only. ``service``: the :class:`~edge_runtime.service.IntentService` whose ``model`` (named in every
    reply and in the status) follows the swap. The other keyword arguments go to
    :meth:`IntentClassifier.from_bundle` (``backend``, ``threads``, ``threshold``, ``top_k``, ``max_batch``).
    """

    def __init__(self, model: SwappableClassifier, *, service: Any = None, public_key: Any = None,
                 staging_dir: str | None = None, warmup_text: str = "hello", **load_kwargs: Any) -> None:
        self.model = model
        self.service = service
        self.staging_dir = staging_dir
        self.warmup_text = warmup_text
        self.load_kwargs = load_kwargs
        self._lock = threading.Lock()
        self.refused = 0
        if public_key is not None and not hasattr(public_key, "verify"):
            from ..signing import load_public_key

            public_key = load_public_key(public_key)
        self.public_key = public_key
        if service is not None:
            previous = model.on_swap

            def follow(new: Any) -> None:
                service.model = {"name": str(new.name), "version": str(new.version)}
                if previous is not None:
                    previous(new)

            model.on_swap = follow

    def load(self, path: str | Path) -> Any:
        """Verify and load the bundle at ``path`` and stage it; return the new classifier (not yet serving).

        Raises a :class:`~edge_runtime.errors.BundleError` (incl. ``SignatureError``) or ``BackendError``;
        the model that is serving keeps serving.
        """
        with self._lock:  # one update at a time
            try:
                classifier, cleanup = load_verified(path, public_key=self.public_key, staging_dir=self.staging_dir,
                                                    warmup_text=self.warmup_text, **self.load_kwargs)
            except BaseException as exc:
                self.refused += 1
                log.warning("model update from %s refused, %s v%s keeps serving: %s", path, self.model.name,
                            self.model.version, exc)
                raise
            self.model.stage(classifier, cleanup)
            log.info("model update %s v%s verified and loaded; it serves from the next batch",
                     classifier.name, classifier.version)
            return classifier
