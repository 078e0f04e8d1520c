"""Finding a record's artifact files and reading their bytes: never through a
symbolic link, and, for a snapshot (one pass of reads), with few system calls.

A snapshot lists ``analysis/`` once (no ``lstat`` per name and format looked up); a
name in one of its folders is looked up by opening it (one system call finds and
opens the file, whose bytes are kept for the read that follows; a listing costs
several); the symbolic-link checks of a folder (the record's, ``analysis/``, the
folder's own) are made once. It finds, reads and refuses the same files as a plain
look-up (``lstat`` per name, checks per read).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from kymwatch.errors import ArtifactNotFoundError, ArtifactUnreadableError
from kymwatch.store.artifactio import read_if_present, read_regular_file
from kymwatch.store.layout import ArtifactFormat, artifact_file_name

__all__ = ["ArtifactFiles", "file_name"]


@functools.lru_cache(maxsize=256)
def file_name(name: str, fmt: ArtifactFormat) -> str:
    """Artifact ``name``'s file in format ``fmt``, relative to ``analysis/``."""
    return artifact_file_name(name, fmt)


@functools.lru_cache(maxsize=256)
def _split_name(name: str, fmt: ArtifactFormat) -> tuple[str, str, str]:
    """The file name of ``name`` in ``fmt`` under ``analysis/``: the path from there,
    its folder (may be empty) and its base name."""
    rel = artifact_file_name(name, fmt)
    folder, _, base = rel.rpartition("/")
    return os.sep + rel, folder, base


_Candidate = tuple[str, str, str, ArtifactFormat]


@functools.lru_cache(maxsize=256)
def _candidates(name: str, formats: tuple[ArtifactFormat, ...]) -> tuple[_Candidate, ...]:
    """The files of ``name`` in each of ``formats``, in order: :func:`_split_name`'s
    path, folder and base name, and the format."""
    return tuple((*_split_name(name, fmt), fmt) for fmt in formats)


@functools.lru_cache(maxsize=64)
def _flat_candidates(
    lookups: tuple[tuple[str, tuple[ArtifactFormat, ...]], ...],
) -> tuple[tuple[str, _Candidate], ...]:
    """Every (artifact name, candidate file) of ``lookups``, in the order tried."""
    return tuple((name, cand) for name, formats in lookups for cand in _candidates(name, formats))


class ArtifactFiles:
    """The artifact look-ups and reads of a record (see the module): ``image_id``,
    ``_dir`` (the record folder) and ``_analysis`` (its ``analysis/``) are set by the
    record, which calls :meth:`_init_lookups`."""

    image_id: str
    _dir: str
    _analysis: str

    def _init_lookups(self, snapshot: bool, listed: Mapping[str, frozenset[str]] | None) -> None:
        self._listed: dict[str, frozenset[str] | None] | None = None
        if snapshot:
            self._listed = dict(listed) if listed else {}
        self._links: dict[str, bool] | None = {} if snapshot else None
        # Snapshot: the link check of each folder under analysis/ ("" for it), made
        # once; the files of its folders looked up by opening them -> found, and what
        # those opens read (the bytes, or why they cannot be read) until read.
        self._rel_links: dict[str, bool] = {}
        self._probed: dict[str, bool] = {}
        self._probing: set[str] = set()
        self._opened: dict[str, bytes | ArtifactUnreadableError] = {}

    def find_artifact_file(
        self, name: str, formats: Sequence[ArtifactFormat]
    ) -> tuple[str, ArtifactFormat] | None:
        """:meth:`find_artifact` with the path as a string (the indexers' hot path)."""
        cands = _candidates(name, formats if isinstance(formats, tuple) else tuple(formats))
        for cand in cands:
            if self._present(name, cand):
                return self._analysis + cand[0], cand[3]
        return None

    def find_first(
        self, lookups: tuple[tuple[str, tuple[ArtifactFormat, ...]], ...]
    ) -> tuple[str, str, ArtifactFormat] | None:
        """The first file found among ``lookups`` ((artifact name, formats) in the order
        tried), as :meth:`find_artifact_file` finds each: the name, the path and the
        format; None when none is there (one call for an indexer's whole look-up)."""
        for name, cand in _flat_candidates(lookups):
            if self._present(name, cand):
                return name, self._analysis + cand[0], cand[3]
        return None

    def _present(self, name: str, cand: _Candidate) -> bool:
        """Whether candidate file ``cand`` of artifact ``name`` exists (see the module)."""
        rel, folder, base, _ = cand
        listed = self._listed
        if listed is not None:
            names = listed[folder] if folder in listed else self._names(folder)
            if names is not None:
                return base in names
            if folder in self._probing:
                return self._probe(name, self._analysis + rel, folder)
        p = self._analysis + rel
        try:
            os.lstat(p)
        except PermissionError as e:
            raise ArtifactUnreadableError(self.image_id, name, p, str(e)) from e
        except OSError:  # absent (or a name the OS refuses): not there
            return False
        return True

    def _probe(self, name: str, path: str, folder: str) -> bool:
        """Whether file ``path`` of artifact ``name`` (in ``analysis/<folder>``) exists
        (snapshot mode), found by opening and reading it: its bytes, or why it cannot
        be read, are kept for :meth:`_read_bytes`. Under a folder that is a symbolic
        link it is looked up as a plain record does (the read then refuses it)."""
        known = self._probed.get(path)
        if known is not None:
            return known
        if self._linked_rel(folder):
            try:
                os.lstat(path)
                found = True
            except PermissionError as e:
                raise ArtifactUnreadableError(self.image_id, name, path, str(e)) from e
            except OSError:
                found = False
        else:
            try:
                got: bytes | ArtifactUnreadableError | None = read_if_present(
                    self.image_id, name, path
                )
            except ArtifactUnreadableError as e:
                got = e
            found = got is not None
            if got is not None:
                self._opened[path] = got
        self._probed[path] = found
        return found

    def _names(self, folder: str) -> frozenset[str] | None:
        """The entries of ``analysis/<folder>`` (snapshot mode), listed once; None when
        the folder cannot be listed (then each name is looked up on its own), and for
        a folder of ``analysis/`` that a scan did not list (its names are looked up by
        opening them: one system call each, fewer than a listing's)."""
        listed = self._listed
        assert listed is not None
        if folder in listed:
            return listed[folder]
        parent, _, base = folder.rpartition("/")
        if folder:
            above = self._names(parent)
            if above is not None:
                if base not in above:
                    listed[folder] = frozenset()
                    return listed[folder]
                if not parent:  # probed, not listed
                    self._probing.add(folder)
                    listed[folder] = None
                    return None
        try:
            names: frozenset[str] | None = frozenset(
                os.listdir(os.path.join(self._analysis, folder))
            )
        except (FileNotFoundError, NotADirectoryError):
            names = frozenset()
        except OSError:  # e.g. a folder one may search but not list
            names = None
        listed[folder] = names
        return names

    def _require_file(
        self, name: str, formats: Sequence[ArtifactFormat]
    ) -> tuple[str, ArtifactFormat]:
        found = self.find_artifact_file(name, formats)
        if found is None:
            looked = tuple(file_name(name, f) for f in formats)
            raise ArtifactNotFoundError(self.image_id, name, looked)
        return found

    def _is_link(self, folder: str) -> bool:
        links = self._links
        if links is None:
            return os.path.islink(folder)
        known = links.get(folder)
        if known is None:
            known = links[folder] = os.path.islink(folder)
        return known

    def _linked_folder(self, path: str | Path) -> bool:
        """True if the record folder or a folder between it and ``path`` is a symlink
        (O_NOFOLLOW guards only the last component: such a link leads out of the store)."""
        p = os.fspath(path)
        links = self._links
        if links is None:
            return self._linked_chain(os.path.dirname(p))
        analysis = self._analysis
        if p.startswith(analysis) and p[len(analysis) : len(analysis) + 1] == os.sep:
            return self._linked_rel(p[len(analysis) + 1 :].rpartition(os.sep)[0])
        folder = os.path.dirname(p)
        key = "chain:" + folder
        known = links.get(key)
        if known is None:
            known = links[key] = self._linked_chain(folder)
        return known

    def _linked_rel(self, folder: str) -> bool:
        """:meth:`_linked_folder` for the files of ``analysis/<folder>`` (snapshot mode,
        once per folder)."""
        known = self._rel_links.get(folder)
        if known is None:
            if not folder:
                known = self._is_link(self._analysis) or self._is_link(self._dir)
            elif "/" not in folder:
                known = self._linked_rel("") or self._is_link(self._analysis + os.sep + folder)
            else:
                known = self._linked_chain(os.path.join(self._analysis, folder))
            self._rel_links[folder] = known
        return known

    def _linked_chain(self, folder: str) -> bool:
        root = self._dir
        while True:
            if self._is_link(folder):
                return True
            parent = os.path.dirname(folder)
            if folder in (root, parent):
                return False
            folder = parent

    def _read_bytes(self, name: str, path: str | Path) -> bytes:
        """The whole file, refusing symbolic links (the file or a folder on the way)
        and anything but a regular file (:func:`~kymwatch.store.artifactio.read_regular_file`);
        a file a snapshot's look-up has just read is not read again."""
        if self._opened:
            got = self._opened.pop(os.fspath(path), None)
            if isinstance(got, ArtifactUnreadableError):
                raise got
            if got is not None:
                return got
        if self._linked_folder(path):
            reason = "symbolic links are not followed (a folder on the way is one)"
            raise ArtifactUnreadableError(self.image_id, name, str(path), reason)
        return read_regular_file(self.image_id, name, path)
