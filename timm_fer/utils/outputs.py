"""Every file a command writes, planned before its work starts: :class:`OutputPlan`.

The rule: a command writes over no file that is not its own output, and over an input never. Its own outputs are
what it creates in this run and the state it keeps for itself (a training run folder that ``--resume`` continues, the
ONNX cache: those are not planned here). A command reserves every output path of its run in one plan before any
work: each path is checked against the run's inputs (never written, even with ``--overwrite``), against the files
already on disk (replaced only with ``--overwrite``) and against every other output of the run. A refusal is one
line naming the colliding path and the fix, raised before anything is read or written.

Outputs made from an input are named after it, with their kind before the file type, so that an output folder may
be an input folder and outputs of different kinds never share a name (:func:`output_name`):

- ``STEM.KIND.EXT`` for one output per input: ``a.annotated.png``, ``clip.annotated.mp4``, ``clip.timeline.png``;
- ``STEM_faceN.KIND.EXT`` for one output per face: ``a_face0.viz.png``, ``a_face0.crop.png``.

Two inputs with the same stem (``x/a.png``, ``y/a.png``) give ``a.annotated.png`` and ``a_1.annotated.png``.
"""
import itertools
import os
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple, Union

from ..errors import ConfigError
from .options import check_output_path

__all__ = ['PACKAGE_FOLDER', 'FaceNames', 'OutputPlan', 'create_output_folder', 'output_name']

PathLike = Union[str, os.PathLike]

PACKAGE_FOLDER = Path(__file__).resolve().parents[1]
"""The installed timm-fer package: its files (the shipped weights, the sample portrait) are inputs of every plan."""


def output_name(stem: str, kind: str, suffix: str, face: Optional[int] = None) -> str:
    """The file name of an output of ``kind`` (``annotated``, ``timeline``, ``viz``, ``crop``) made from the input
    named ``stem``: ``STEM.KIND.SUFFIX``, or ``STEM_faceN.KIND.SUFFIX`` for its face ``N``."""
    return f'{stem}{"" if face is None else f"_face{face}"}.{kind}{suffix}'


def _real(path: PathLike) -> str:
    """``path`` with every symbolic link and ``..`` resolved: two names of one file give one string."""
    return os.path.normcase(os.path.realpath(os.fspath(path)))


def _face_parses(name: str) -> List[Tuple[str, str]]:
    """Every way to read the file name ``name`` as ``STEM_faceN`` and an ending (``.KIND.SUFFIX``)."""
    return [(name[:m.start()], name[m.end():]) for m in re.finditer(r'_face\d+(?=\.)', name)]


def create_output_folder(folder: Path) -> None:
    """Create ``folder`` and its parents, if missing.

    Raises:
        ConfigError: it cannot be created; the message names it and says to choose a writable location.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f'cannot create the output folder {folder} ({e.strerror or type(e).__name__}); choose a '
                          f'writable location.') from e


class OutputPlan:
    """The output paths of one run, each reserved before the run writes anything.

    Args:
        inputs: What the run reads: files, and folders whose every file is an input (a Hub model folder, a dataset).
            None entries are left out. The files of the installed package (:data:`PACKAGE_FOLDER`) are inputs of
            every plan.
        overwrite: Replace files already on disk at a reserved path (an input never).

    Every ``reserve``-like method is idempotent for the same request, so a command may plan its outputs up front
    and the functions it calls ask again for the same paths.
    """

    def __init__(self, inputs: Iterable[Optional[PathLike]] = (), overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._input_files: Set[str] = set()
        self._input_folders: List[str] = [_real(PACKAGE_FOLDER)]
        self._input_ids: Set[Tuple[int, int]] = set()
        for item in inputs:
            if item is None:
                continue
            real = _real(item)
            if os.path.isdir(real):
                self._input_folders.append(real)
            else:
                self._input_files.add(real)
                try:
                    status = os.stat(real)
                    self._input_ids.add((status.st_dev, status.st_ino))  # a hard link to an input is the input
                except OSError:
                    pass
        self._paths: Dict[str, str] = {}  # real path -> the flag that reserved it
        self._face_like: Set[Tuple[str, str, str]] = set()  # (real folder, stem, ending) of reserved per-face names
        self._families: Dict[Tuple[str, str], str] = {}  # (real folder, face name ending) -> the flag
        self._requests: Dict[Tuple[str, ...], Path] = {}
        self._stems: Dict[Tuple[str, str], Dict[str, str]] = {}  # (real folder, ending) -> face stem -> real source
        self._listings: Dict[Tuple[str, str], Dict[str, List[str]]] = {}
        self._face_names: Dict[Tuple[str, str], FaceNames] = {}
        self._checked_folders: Set[Tuple[str, str]] = set()
        self.folders: Dict[str, Path] = {}

    @property
    def paths(self) -> List[Path]:
        """The files reserved so far (without the per-face ones, whose number comes with the run)."""
        return [Path(p) for p in self._paths]

    def file(self, path: PathLike, flag: str, fix: str = 'choose another file name') -> Path:
        """Reserve a file the user named (``--output``, ``--out``) or a fixed name in a folder they named.

        Args:
            path: The file.
            flag: The option that names it, for messages.
            fix: What to do instead, for messages.

        Raises:
            ConfigError: ``path`` is an input, another output of the run, or exists (without ``overwrite``), or
                cannot be written.
        """
        path = check_output_path(path, flag)
        key = ('file', _real(path))
        if key in self._requests:
            return self._requests[key]
        real = _real(path)
        other = self._paths.get(real) or self._family_of(real)
        if other is not None:
            raise ConfigError(f'{flag} {path} is also the output of {other} in this run; give them different names.')
        self._check_disk(path, real, flag, fix)
        return self._keep(key, path, real, flag)

    def derived(self, folder: PathLike, source: PathLike, kind: str, suffix: str, flag: str,
                stem: Optional[str] = None) -> Path:
        """Reserve ``folder/STEM.KIND.SUFFIX``, the output of ``kind`` made from ``source`` (``STEM_1``, ... when
        another input of the run took the name first).

        Args:
            folder: Where the outputs of ``flag`` go.
            source: The input the output is made from.
            kind: What the output is (``annotated``, ``timeline``).
            suffix: Its file type, e.g. ``.png``.
            flag: The option that names ``folder``, for messages.
            stem: The name to start from; default ``source``'s stem.

        Raises:
            ConfigError: the path is an input or exists (without ``overwrite``), or ``folder`` cannot be written.
        """
        folder = self._folder(folder, flag)
        key = ('derived', kind, suffix, _real(folder), _real(source))
        if key in self._requests:
            return self._requests[key]
        base = Path(source).stem if stem is None else stem
        for count in itertools.count():
            path = folder / output_name(base if count == 0 else f'{base}_{count}', kind, suffix)
            real = _real(path)
            if real not in self._paths and self._family_of(real) is None:
                break
        self._check_disk(path, real, flag, f'choose another folder for {flag}')
        return self._keep(key, path, real, flag)

    def faces(self, folder: PathLike, kind: str, suffix: str, flag: str,
              sources: Iterable[PathLike] = ()) -> 'FaceNames':
        """The per-face outputs of ``kind`` in ``folder``, ``STEM_faceN.KIND.SUFFIX``, reserved for each of
        ``sources`` (the others are reserved when first asked for).

        Raises:
            ConfigError: a file of that pattern exists for one of ``sources`` (an input always, another file without
                ``overwrite``), or ``folder`` cannot be written.
        """
        folder = self._folder(folder, flag)
        key = (_real(folder), f'.{kind}{suffix}')
        if key not in self._face_names:
            self._face_names[key] = FaceNames(self, folder, kind, suffix, flag)
        names = self._face_names[key]
        for source in sources:
            names.reserve(source)
        return names

    def folder(self, path: PathLike, flag: str) -> Path:
        """Reserve a folder that the run replaces as a whole (a Hub model folder): no input may lie in it, and an
        existing folder with files in it is replaced only with ``overwrite``.

        Raises:
            ConfigError: an input lies in ``path`` (or holds it), or ``path`` exists with files (without
                ``overwrite``), or cannot be written.
        """
        path = check_output_path(path, flag, folder=True)
        real = _real(path)
        inside = [f for f in self._input_files if f.startswith(real + os.sep)]
        inside += [f for f in self._input_folders if f == real or f.startswith(real + os.sep)]
        if path.is_dir() and any(path.iterdir()):
            inside += [f for f in self._input_folders if real.startswith(f + os.sep)]
        if inside:
            raise ConfigError(f'{flag} {path} holds the input {inside[0]}, which would be replaced; timm-fer never '
                              f'writes over an input, even with --overwrite: choose another folder for {flag}.')
        if path.is_dir() and any(path.iterdir()) and not self.overwrite:
            raise ConfigError(f'{flag} {path} already exists; pass --overwrite to replace it, or choose another '
                              f'folder for {flag}.')
        return self._keep(('folder', real), path, real, flag)

    def create_folders(self) -> None:
        """Create the folders of the reserved outputs (once every output is reserved, before the work).

        Raises:
            ConfigError: a folder cannot be created.
        """
        for folder in self.folders.values():
            create_output_folder(folder)

    def is_input(self, path: PathLike) -> bool:
        """Whether ``path`` is one of the run's inputs (or a file in an input folder, or a link to an input)."""
        real = _real(path)
        if real in self._input_files:
            return True
        if not os.path.lexists(real):
            return False
        if any(real.startswith(folder + os.sep) for folder in self._input_folders):
            return True
        try:
            status = os.stat(real)
        except OSError:
            return False
        return (status.st_dev, status.st_ino) in self._input_ids

    def _folder(self, folder: PathLike, flag: str) -> Path:
        folder = Path(folder)
        if (flag, _real(folder)) not in self._checked_folders:
            check_output_path(folder, flag, folder=True)
            self._checked_folders.add((flag, _real(folder)))
        self.folders.setdefault(_real(folder), folder)
        return folder

    def _keep(self, key: Tuple[str, ...], path: Path, real: str, flag: str) -> Path:
        self._requests[key] = path
        self._paths[real] = flag
        folder, name = os.path.split(real)
        self._face_like.update((folder, stem, ending) for stem, ending in _face_parses(name))
        if key[0] != 'folder':
            self.folders.setdefault(os.path.dirname(real), path.parent)
        return path

    def _check_disk(self, path: Path, real: str, flag: str, fix: str) -> None:
        """Refuse ``path`` when it is an input, a folder, or a file already there (without ``overwrite``)."""
        if self.is_input(path):
            raise ConfigError(f'{flag}: {path} is an input of this run; timm-fer never writes over an input, even '
                              f'with --overwrite: {fix}.')
        if os.path.isdir(path):
            raise ConfigError(f'{flag}: {path} is a folder, where a file would be written: {fix}.')
        if os.path.lexists(path) and not self.overwrite:
            raise ConfigError(f'{flag}: {path} already exists; pass --overwrite to replace it, or {fix}.')

    def _family_of(self, real: str) -> Optional[str]:
        """The flag whose per-face outputs include the file ``real``, if any."""
        folder, name = os.path.split(real)
        for stem, ending in _face_parses(name):
            if stem in self._stems.get((folder, ending), {}):
                return self._families[folder, ending]
        return None

    def _existing_faces(self, folder: Path, ending: str) -> Dict[str, List[str]]:
        """The files already in ``folder`` named like per-face outputs ending in ``ending``, by their stem."""
        key = (_real(folder), ending)
        if key not in self._listings:
            found: Dict[str, List[str]] = {}
            pattern = re.compile(rf'(.*)_face\d+{re.escape(ending)}')
            for name in os.listdir(folder) if folder.is_dir() else ():
                match = pattern.fullmatch(name)
                if match:
                    found.setdefault(match[1], []).append(name)
            self._listings[key] = found
        return self._listings[key]


class FaceNames:
    """The per-face outputs of one kind in one folder (see :meth:`OutputPlan.faces`): for each input, a name stem
    reserved before the run, and ``STEM_faceN.KIND.SUFFIX`` for its face ``N``."""

    def __init__(self, plan: OutputPlan, folder: Path, kind: str, suffix: str, flag: str) -> None:
        self.plan = plan
        self.folder = folder
        self.kind = kind
        self.suffix = suffix
        self.flag = flag
        self.ending = f'.{kind}{suffix}'
        self._key = (_real(folder), self.ending)
        self._sources: Dict[str, str] = {}  # real source -> its stem
        plan._families.setdefault(self._key, flag)

    def reserve(self, source: PathLike) -> str:
        """Reserve the names of ``source``'s faces; their stem.

        Raises:
            ConfigError: a file named like one of them exists (an input always, another without ``overwrite``).
        """
        real_source = _real(source)
        if real_source in self._sources:
            return self._sources[real_source]
        taken = self.plan._stems.setdefault(self._key, {})
        base = Path(source).stem
        for count in itertools.count():
            stem = base if count == 0 else f'{base}_{count}'
            if stem not in taken and not self._held_as_file(stem):
                break
        for name in self.plan._existing_faces(self.folder, self.ending).get(stem, ()):
            path = self.folder / name
            self.plan._check_disk(path, _real(path), self.flag, f'choose another folder for {self.flag}')
        taken[stem] = real_source
        self._sources[real_source] = stem
        return stem

    def face_path(self, source: PathLike, face: int) -> Path:
        """The file of face ``face`` (from 0) of ``source``."""
        return self.folder / output_name(self.reserve(source), self.kind, self.suffix, face)

    def _held_as_file(self, stem: str) -> bool:
        """Whether another reservation of the plan holds a name of ``stem``'s faces in this folder."""
        return (self._key[0], stem, self.ending) in self.plan._face_like
