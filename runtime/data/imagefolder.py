"""Image folders: ``ROOT/train/<class>/*.png|jpg|jpeg`` and ``ROOT/test/<class>/*``.

- The class folder's name is the label field ``data.label`` (default "fine");
  class index order is the sorted folder names of ``train/`` (as torchvision's
  ImageFolder), so indices do not depend on the file system's listing order.
- ``data.hierarchy`` derives more label fields from it, e.g.
  ``coarse = { vehicle = [airplane, ...], animal = [...] }``: every class must be
  in exactly one group of every field; group indices are the sorted group names.
  A table whose classes are all groups of another table nests under it
  (``super = { thing = ["vehicle", "animal"] }``: coarse -> super); each table is
  one entry ``(child, field)`` of ``Dataset.hierarchy``.
- Images are decoded with torchvision.io (libjpeg / libpng; several times faster
  than PIL for small files) and converted to RGB (or grayscale when the input
  node has one channel): grayscale is replicated, the alpha channel of RGBA is
  dropped, palette images are expanded. They must all have the input node's
  height and width (or, without one, the first image's), unless ``data.resize =
  [H, W]`` is set: then every image is resized to it (bilinear, antialiased).
- Files with other suffixes and hidden folders are ignored; a single class (a SpecError, exit 2, as
  every head of fewer than two classes is), an empty class folder, a test class that has no training
  folder, two class folders that are one folder (a symbolic link to another class folder, in either
  split: its images would carry two labels, or be both trained and tested on), and a folder or image
  that cannot be read, are errors naming the folders or file.
- The folder is untrusted input. Symbolic links are followed only within ROOT: a
  link (split, class folder or image) that leads outside ROOT, dangles or loops is
  an error naming it, never silently skipped (skipping would change the data set
  without a word). ROOT itself may be a link. An image larger than PIL's
  ``Image.MAX_IMAGE_PIXELS`` (89.5 million pixels) is refused from its header
  before it is decoded: a few-kilobyte PNG can claim gigabytes (a decompression bomb);
  only regular files are read (runtime/data/image_files.py, shared with graphc predict).

Only the images asked for are decoded (:func:`read_imagefolder`): :func:`open_imagefolder` lists and
checks the folder without decoding, the caller picks the training images it uses (a limited run:
graphc.runtime.data.load), and the rest stay on disk. Progress lines (:class:`Progress`) say how
many images are read, decoded and found in the cache.

Decoding happens once: the uint8 tensors go to a cache file in
``default_data_dir()/imagefolder-cache/`` (not ROOT, which may be read-only or
shared, and so that one folder holds every cache and can be deleted as one).
The cache is keyed by ROOT's absolute path and the decoding options (file name)
and by every image's relative path, size, modification time, inode and status-change
time (``st_size``, ``st_mtime_ns``, ``st_ino``, ``st_ctime_ns``; stored inside), so
adding, removing, editing or replacing a file re-decodes - even a replacement of the
same size whose modification time was set back (``touch -r``, ``os.utime``, ``cp -p``,
``rsync -t``): a new file has a new inode, and any write, rename or ``utime`` sets the
ctime to now, which no user-space call can set back. The file's bytes are not hashed:
that would read every image on every load, most of the cost the cache saves, while the
stat is already made for the listing. (On a file system without real inodes or ctimes
- some FUSE and network mounts - delete the cache folder after replacing images.)
A cache of some training images (a limited run's) is a partial cache (:data:`CACHE_PARTIAL`, with
``train_index``, the positions it holds, and the whole test split); a later read decodes only what it
lacks and writes the union back, in the format of a full cache once it holds every image. (A graphc
before partial caches reads one as a foreign file and decodes the folder again.)
It is written to a temporary file and renamed into place, so an interrupted run never
leaves a torn cache; a cache that cannot be written (full disk, file too large,
read-only file system) is skipped with one warning and the data set is used as decoded.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import time
import unicodedata
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from graphc.errors import Problem, RunError, SpecError, did_you_mean, printable
from graphc.files import atomic_write, nfc_names
from graphc.lang.hierarchy import hierarchy_paths, listed_twice, named_after_label, table_children
from graphc.runtime.data.image_files import read_image_file
from graphc.runtime.data.split import Split, compose, default_data_dir

SUFFIXES = (".png", ".jpg", ".jpeg")
CACHE_FORMAT = "graphc-imagefolder/1"  # every image of the folder
CACHE_PARTIAL = "graphc-imagefolder/1-partial"  # some training images (train_index) and the test split
LAYOUT = "ROOT/train/<class>/*.png|jpg|jpeg and ROOT/test/<class>/*.png|jpg|jpeg"


# --------------------------------------------------------------------------- the folders


def _follow(path: Path | str, root: Path) -> None:
    """Refuse a symbolic link that loops, dangles or leads out of ``root`` (already resolved)."""
    try:
        target = Path(path).resolve(strict=True)
    except FileNotFoundError:
        raise RunError(f"{path} is a broken symbolic link (to {os.readlink(path)}); fix or delete it.") from None
    except (RuntimeError, OSError) as exc:  # RuntimeError: pathlib's "Symlink loop"; OSError: ELOOP
        if isinstance(exc, OSError) and exc.errno != errno.ELOOP:
            raise RunError(f"{path} cannot be read ({exc}).") from None
        raise RunError(f"{path} is a symbolic link that loops (it leads back to itself); delete it.") from None
    if not target.is_relative_to(root):
        raise RunError(
            f"{path} is a symbolic link to {target}, outside the image folder {root}; graphc does not follow "
            "links out of the data folder. Copy the files in, or point [data] root (--data-dir) at a folder "
            "that holds them."
        )


def _unreadable(path: Path | str, exc: OSError) -> RunError:
    return RunError(
        f"{path} cannot be read ({exc.strerror or exc}); make it readable (or remove it from the image folder)."
    )


def _one_folder_per_class(root: Path) -> None:
    """Refuse two class folders (in train/ and test/) that are one folder, through a symbolic link:
    its images would be two classes at once, or both training and test images."""
    seen: dict[Path, Path] = {}
    for split in ("train", "test"):
        for name in _class_folders(root / split, root):
            folder = root / split / name
            target = folder.resolve()  # _class_folders checked the links: they stay inside root
            first = seen.setdefault(target, folder)
            if first != folder:
                link = folder if folder.is_symlink() else first
                same = "carry two labels" if first.parent == folder.parent else "be both trained and tested on"
                raise RunError(
                    f"the class folders {first} and {folder} are one folder ({link} is a symbolic link to {target}): "
                    f"its images would {same}. Give each class its own folder of images."
                )


def _class_folders(split_dir: Path, root: Path) -> list[str]:
    names = []
    try:
        listing = list(split_dir.iterdir())
    except OSError as exc:  # no permission, an I/O error: never a traceback, never a silently smaller set
        raise _unreadable(split_dir, exc) from None
    for p in listing:
        if p.name.startswith("."):
            continue
        if p.is_symlink():
            _follow(p, root)
        if p.is_dir():
            names.append(p.name)
    return sorted(names)


def _image_files(class_dir: Path, root: Path) -> list[os.DirEntry]:
    entries = []
    try:
        listing = list(os.scandir(class_dir))
    except OSError as exc:
        raise _unreadable(class_dir, exc) from None
    for e in listing:
        if e.name.lower().endswith(SUFFIXES):
            if e.is_symlink():
                _follow(e.path, root)
            if e.is_file():
                entries.append(e)
    return sorted(entries, key=lambda e: e.name)


def class_labels(folders: list[str], where: Path) -> list[str]:
    """The class names of these folder names: in Unicode normal form NFC (macOS writes folder names
    in NFD, a spec's TOML is usually NFC), sorted. Folders whose names differ only in normal form look
    the same and are one class, with a warning naming them."""
    normal, groups = nfc_names(folders)
    for group in groups:
        warnings.warn(
            f"{where}: the class folders {' and '.join(ascii(name) for name in group)} differ only in Unicode "
            f"normal form (they look the same); their images are one class, {printable(normal[folders.index(group[0])])}. "
            "Merge the folders to silence this.",
            stacklevel=3,
        )
    return sorted(set(normal))


def scan(root: Path, where: str | None = None) -> tuple[list[str], dict[str, list[tuple[str, int]]], str]:
    """Class names, ``{split: [(file path, class index)]}`` and a fingerprint of every file.
    ``where``: what sets the folder (``--data-dir, or [data] root in FILE``), for the messages of a
    missing folder.

    Paths stay ``str``: building 60,000 ``Path`` objects would cost more than the stats."""
    point = f" Point {where or '--data-dir, or [data] root'}, at the folder that holds train/ and test/."
    if not root.is_dir():
        raise RunError(f"the image folder {root} does not exist (or is not a directory); expected {LAYOUT}.{point}")
    for split in ("train", "test"):
        if (root / split).is_symlink():
            _follow(root / split, root)
        if not (root / split).is_dir():
            raise RunError(f"the image folder {root} has no {split}/ directory; expected {LAYOUT}.{point}")
    folders = _class_folders(root / "train", root)
    if not folders:
        raise RunError(f"{root / 'train'} has no class folders; expected {LAYOUT}.")
    classes = class_labels(folders, root / "train")
    if len(classes) == 1:  # one class: the loss is 0 and the accuracy 100% whatever the model does
        raise SpecError(  # as every head of fewer than two classes is (graphc.ir.build): exit 2
            Problem(
                f"{root / 'train'} has a single class folder ({classes[0]}); a classifier needs at least two.",
                field="data.root",
                hint="add a folder per class (at least two).",
            )
        )
    if not _class_folders(root / "test", root):
        raise RunError(f"{root / 'test'} has no class folders; expected {LAYOUT}.")
    _one_folder_per_class(root)
    index = {name: i for i, name in enumerate(classes)}
    files: dict[str, list[tuple[str, int]]] = {}
    fingerprint = hashlib.sha256()
    for split in ("train", "test"):
        files[split] = []
        for name in _class_folders(root / split, root):
            if unicodedata.normalize("NFC", name) not in index:
                raise RunError(
                    f"{root / split / name} is a class with no training folder ({root / 'train' / name} is missing); "
                    "every test class must also be a training class. Add the training images or remove the folder."
                )
            entries = _image_files(root / split / name, root)
            if not entries:
                raise RunError(
                    f"the class folder {root / split / name} holds no .png/.jpg/.jpeg images; "
                    "add images or remove the folder."
                )
            for entry in entries:
                try:
                    stat = entry.stat()
                except OSError as exc:
                    raise _unreadable(entry.path, exc) from None
                # Size, mtime, inode and ctime: a replaced file differs in one of them even when its size
                # and mtime were kept (the module's docstring says why this and not a hash of the bytes).
                fingerprint.update(
                    f"{split}/{name}/{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}"
                    f"\0{stat.st_ctime_ns}\n".encode()
                )
                files[split].append((entry.path, index[unicodedata.normalize("NFC", name)]))
    return classes, files, fingerprint.hexdigest()


def derive_labels(
    classes: list[str],
    label: str,
    hierarchy: dict[str, dict[str, list[str]]],
    root: Path,
    classes_from: str | None = None,
) -> tuple[dict[str, list[str]], dict[tuple[str, str], torch.Tensor]]:
    """Class names per label field and, per hierarchy table, its child class -> group index map,
    keyed ``(child field, table field)``. The child is the folder label, or for a nested table the
    table whose groups it lists (graphc.lang.hierarchy.table_children). ``classes_from``: where the
    classes come from when not ROOT's class folders (a label table's column), for the messages."""
    nfc = lambda name: unicodedata.normalize("NFC", name) if isinstance(name, str) else name  # as class_labels
    tables = {
        field: dict(sorted((nfc(group), [nfc(m) for m in members]) for group, members in groups.items()))
        for field, groups in hierarchy.items()
        if field != label
    }
    # groups in name order, the order the loop below assigns classes in
    problems = named_after_label(label, hierarchy, where="hierarchy")
    problems += [problem for _, _, problem in listed_twice(tables, where="hierarchy")]
    children = table_children(label, hierarchy)
    # Every table's classes first: a nested table is checked against the groups of its child table.
    class_names = {label: list(classes), **{field: sorted(groups) for field, groups in tables.items()}}
    links: dict[tuple[str, str], torch.Tensor] = {}
    for field, groups in tables.items():  # every table but one named after the label (reported above)
        where = f"hierarchy.{field}"
        child = children[field]
        members = class_names[child]
        group_names = sorted(groups)
        group_of: dict[str, str] = {}
        for group in group_names:
            if not groups[group]:
                problems.append(
                    Problem(
                        f"group '{group}' lists no classes.", field=where, hint="list its classes or remove the group."
                    )
                )
            for member in groups[group]:
                if member in group_of:
                    continue  # listed twice: reported by listed_twice above
                if member not in members:
                    problems.append(
                        Problem(
                            (
                                f"group '{group}' lists class '{member}', but {root / 'train'} has no folder of that name."
                                if classes_from is None
                                else f"group '{group}' lists class '{member}', which {classes_from} does not have."
                            )
                            if child == label
                            else f"group '{group}' lists '{member}', which is not a group of '{child}'.",
                            field=where,
                            hint=did_you_mean(member, members) or "check the spelling against the folders.",
                        )
                    )
                else:
                    group_of[member] = group
        for name in members:
            if name not in group_of:
                problems.append(
                    Problem(
                        f"class '{name}' ({classes_from or 'folder ' + str(root / 'train' / name)}) is in no group; "
                        "every class must be mapped exactly once."
                        if child == label
                        else f"group '{name}' of '{child}' is in no group; every {child} class must be mapped exactly once.",
                        field=where,
                        hint=f"add '{name}' to one of the groups: {', '.join(group_names)}.",
                    )
                )
        links[(child, field)] = torch.tensor(
            [group_names.index(group_of[c]) if c in group_of else -1 for c in members], dtype=torch.int64
        )
    if problems:
        raise SpecError(problems)
    return class_names, links


# --------------------------------------------------------------------------- decoding


def _decode(path: str, channels: int, size: tuple[int, int] | None, resize: bool) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import resize as resize_image

    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    try:
        raw = read_image_file(path)  # a regular file only (never blocks on a FIFO), no decompression bomb
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        image = decode_image(data, mode=mode)
    except (RuntimeError, ValueError, OSError) as exc:
        raise RunError(
            f"{path} cannot be decoded as an image ({str(exc).splitlines()[0]}); replace or delete the file."
        ) from None
    if image.dtype != torch.uint8:  # 16-bit PNG: keep the high byte
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    if size is not None and tuple(image.shape[1:]) != size:
        if not resize:
            raise RunError(
                f"{path} is {image.shape[1]}x{image.shape[2]} (height x width) but the images must be "
                f"{size[0]}x{size[1]} (the input node's shape, or the first image's size). Set [data] resize = "
                f"[{size[0]}, {size[1]}] to resize every image, or resize the files."
            )
        image = resize_image(image, list(size), antialias=True)
    return image  # (C, H, W) uint8


def decode_all(
    paths: list[str],
    channels: int,
    size: tuple[int, int] | None,
    resize: bool,
    done: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Decode ``paths`` into one uint8 (N, C, H, W) tensor, on a few threads (file reads and
    torch ops release the GIL, so this gains a little even on small machines). ``done(n)`` is
    called (on this thread) as each chunk of ``n`` images is decoded, for progress lines."""
    from PIL.Image import DecompressionBombWarning  # read_image_file raises instead

    if size is None:  # no input shape and no resize: the first image sets the size
        size = first_size(paths[0], channels)
    images = torch.empty(len(paths), channels, *size, dtype=torch.uint8)

    def work(start: int) -> int:
        end = min(start + CHUNK, len(paths))
        for i in range(start, end):
            images[i] = _decode(paths[i], channels, size, resize)
        return end - start

    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        # torchvision >= 0.29 marks its image decoders deprecated in favour of torchcodec; they still work.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        warnings.filterwarnings("ignore", category=DecompressionBombWarning)
        for count in pool.map(work, range(0, len(paths), CHUNK)):  # in order; re-raises the first error
            if done is not None:
                done(count)
    return images


CHUNK = 256  # images per decoding task


def first_size(path: str, channels: int) -> tuple[int, int]:
    """Height x width of the image at ``path``: the size every image must have when neither the
    input node nor ``[data] resize`` gives one (the first training image's, in file order)."""
    from PIL.Image import DecompressionBombWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        warnings.filterwarnings("ignore", category=DecompressionBombWarning)
        return tuple(_decode(path, channels, None, False).shape[1:])


class Progress:
    """Progress lines of an image folder's read, through ``report`` (None: silent): one when decoding
    starts, one every :attr:`EVERY` seconds, one at the end (when there was a line before it)."""

    EVERY = 5.0  # seconds between lines

    def __init__(self, report: Callable[[str], None] | None, root: Path, total: int, hits: int):
        self.report, self.total, self.hits, self.every = report, total, hits, self.EVERY
        self.done = hits
        self.started = self.last = time.monotonic()
        if report is not None and total > hits:
            report(
                f"reading images from {root}: {total - hits:,} to decode, {hits:,} from the cache "
                f"({total:,} in all; the first read of a folder decodes, later ones read the cache)"
            )

    def line(self) -> str:
        return f"reading images: {self.done:,} / {self.total:,} (cache: {self.hits:,} hit)"

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.report is not None and now - self.last >= self.every and self.done < self.total:
            self.last = now
            self.report(self.line())

    def end(self) -> None:
        if self.report is not None and self.done > self.hits:
            elapsed = time.monotonic() - self.started
            self.report(f"read {self.done:,} images in {elapsed:.1f} s (cache: {self.hits:,} hit)")


# --------------------------------------------------------------------------- the cache


def cache_file(root: Path, channels: int, size: tuple[int, int] | None, resize: bool, cache_dir: Path) -> Path:
    options = f"{root}\0{channels}\0{size}\0{resize}\0{CACHE_FORMAT}"
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", root.name)[:40] or "root"
    return cache_dir / f"{stem}-{hashlib.sha256(options.encode()).hexdigest()[:16]}.pt"


def _read_cache(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, weights_only=True)
    except Exception:  # torn or foreign file: decode again and overwrite it
        return None
    if not isinstance(cached, dict) or cached.get("format") not in (CACHE_FORMAT, CACHE_PARTIAL):
        return None
    if cached.get("key") != key:
        return None
    return cached


def _write_cache(path: Path, content: dict) -> None:
    try:
        atomic_write(path, lambda f: torch.save(content, f))  # streamed: the cache can be hundreds of MB
    except OSError as exc:  # read-only home, full disk: the data is still good, just not cached
        warnings.warn(
            f"could not write the image cache {path} ({exc}); images will be decoded again next time.", stacklevel=2
        )


# --------------------------------------------------------------------------- the data set


@dataclass(frozen=True)
class Folder:
    """An image folder as its listing gives it, before any image is decoded: what
    :func:`read_imagefolder` decodes from, and what a caller needs to choose the images it reads."""

    root: Path
    channels: int
    size: tuple[int, int] | None  # every image's height x width (None: the first training image's)
    resize: bool
    classes: list[str]
    files: dict[str, list[tuple[str, int]]]  # split -> [(file path, class index)], in file order
    key: str  # the fingerprint of every file (the cache's key)
    label: str
    class_names: dict[str, list[str]]
    links: dict[tuple[str, str], torch.Tensor]
    maps: dict[str, torch.Tensor]  # label field -> folder class index -> its class

    @property
    def pool_size(self) -> int:
        """Images in the training pool (train/), before the validation split."""
        return len(self.files["train"])

    def split(self, images: torch.Tensor, folder_labels: torch.Tensor) -> Split:
        folder_labels = folder_labels.to(torch.int64)
        labels = {self.label: folder_labels, **{field: m[folder_labels] for field, m in self.maps.items()}}
        return Split(images=images.contiguous(), labels=labels)


def open_imagefolder(
    root: str | Path,
    *,
    label: str = "fine",
    hierarchy: dict[str, dict[str, list[str]]] | None = None,
    resize: tuple[int, int] | None = None,
    image_shape: tuple[int, int, int] | None = None,
    where: str | None = None,
) -> Folder:
    """List and check an image folder (every check but the images' own), decoding nothing.
    ``where``: what sets the folder, for the message of a missing one (:func:`scan`)."""
    root, channels, size = _options(root, resize, image_shape)
    classes, files, key = scan(root, where)
    class_names, links = derive_labels(classes, label, hierarchy or {}, root)
    # Every field's labels from the folder labels: a nested field through its chain (fine -> coarse -> super).
    maps = {path[-1]: compose(links, path) for path in hierarchy_paths(links) if path[0] == label}
    return Folder(root, channels, size, resize is not None, classes, files, key, label, class_names, links, maps)


def read_imagefolder(
    folder: Folder,
    select: torch.Tensor | None = None,
    *,
    cache_dir: Path | None = None,
    report: Callable[[str], None] | None = None,
) -> tuple[Split, Split]:
    """``(pool, test)``: the training pool's images at the positions ``select`` (an int64 tensor,
    in its order; None: every image in file order) and the whole test split.

    Only images the cache does not hold are decoded: with ``select``, those selected (a limited
    run reads the images it uses, not the folder). What was decoded is added to the cache: a
    cache of every image is written in the format of a full read, one of some images as a partial
    cache (``train_index`` says which) that later reads complete. ``report`` gets the progress lines.
    """
    files, n = folder.files, folder.pool_size
    path = cache_file(folder.root, folder.channels, folder.size, folder.resize, cache_dir or default_cache_dir())
    cached = _read_cache(path, folder.key) or {}
    train_labels = torch.tensor([c for _, c in files["train"]], dtype=torch.int64)
    test_labels = torch.tensor([c for _, c in files["test"]], dtype=torch.int64)
    have = cached.get("train_index", torch.arange(n) if cached.get("format") == CACHE_FORMAT else None)
    have_images = cached.get("train_images")
    if have is None or have_images is None or len(have) != len(have_images) or (len(have) and int(have.max()) >= n):
        have, have_images = torch.zeros(0, dtype=torch.int64), None  # nothing usable cached
    test_images = cached.get("test_images")
    size = folder.size
    if size is None:  # the first training image's, as every image was decoded at
        size = (
            tuple(have_images.shape[2:])
            if have_images is not None
            else first_size(files["train"][0][0], folder.channels)
        )
    if have_images is None:
        have_images = torch.empty(0, folder.channels, *size, dtype=torch.uint8)

    position = torch.full((n,), -1, dtype=torch.int64)
    position[have] = torch.arange(len(have))
    wanted = torch.arange(n) if select is None else select.to(torch.int64)
    needed = torch.unique(wanted)  # sorted: decoded in file order
    missing = needed[position[needed] < 0]
    test_hits = len(files["test"]) if test_images is not None else 0
    progress = Progress(report, folder.root, len(needed) + len(files["test"]), len(needed) - len(missing) + test_hits)
    train_paths = [files["train"][i][0] for i in missing.tolist()]
    decoded = decode_all(train_paths, folder.channels, size, folder.resize, progress.add) if train_paths else None
    if test_images is None:
        # The test images must match the training images' size even when the first image set it.
        test_images = decode_all([p for p, _ in files["test"]], folder.channels, size, folder.resize, progress.add)
    progress.end()
    if decoded is not None or not test_hits:
        if decoded is not None and not len(have):  # nothing was cached: what was decoded, in file order
            have, have_images = missing, decoded
        elif decoded is not None:  # the cache and the new images, in file order
            have = torch.cat([have, missing])
            order = torch.argsort(have)
            have, have_images = have[order], torch.cat([have_images, decoded])[order]
        position[have] = torch.arange(len(have))
        complete = len(have) == n
        content = {
            "format": CACHE_FORMAT if complete else CACHE_PARTIAL,
            "key": folder.key,
            "classes": folder.classes,
            "train_images": have_images,
            "train_labels": train_labels,
            "test_images": test_images,
            "test_labels": test_labels,
        }
        if not complete:
            content["train_index"] = have
        _write_cache(path, content)
    if select is None and len(have) == n:
        pool = folder.split(have_images, train_labels)  # every image, in file order: no copy
    else:
        pool = folder.split(have_images[position[wanted]], train_labels[wanted])
    return pool, folder.split(test_images, test_labels)


def default_cache_dir() -> Path:
    return default_data_dir() / "imagefolder-cache"


def load_imagefolder(
    root: str | Path,
    *,
    label: str = "fine",
    hierarchy: dict[str, dict[str, list[str]]] | None = None,
    resize: tuple[int, int] | None = None,
    image_shape: tuple[int, int, int] | None = None,
    cache_dir: Path | None = None,
    report: Callable[[str], None] | None = None,
):
    """Return ``(train_pool, test, class_names, hierarchy)`` of an image folder: every image."""
    folder = open_imagefolder(root, label=label, hierarchy=hierarchy, resize=resize, image_shape=image_shape)
    pool, test = read_imagefolder(folder, cache_dir=cache_dir, report=report)
    return pool, test, folder.class_names, folder.links


def probe_imagefolder(
    root: str | Path,
    *,
    label: str = "fine",
    hierarchy: dict[str, dict[str, list[str]]] | None = None,
    resize: tuple[int, int] | None = None,
    image_shape: tuple[int, int, int] | None = None,
    where: str | None = None,
) -> tuple[dict[str, list[str]], tuple[int, ...], int]:
    """``(class_names, image shape, training images)`` of an image folder, checked as
    :func:`load_imagefolder` checks it (same functions, same messages) but from the folder
    listing and the first image of every class in each split: what ``graphc check --data``
    reads, in seconds whatever the size of the set."""
    root, channels, size = _options(root, resize, image_shape)
    classes, files, _ = scan(root, where)
    class_names, _ = derive_labels(classes, label, hierarchy or {}, root)
    first: dict[str, dict[int, str]] = {"train": {}, "test": {}}  # split -> class -> its first file
    for split in first:
        for path, index in files[split]:
            first[split].setdefault(index, path)
    first = {split: list(paths.values()) for split, paths in first.items()}  # train's first file leads, as in a load
    train_images = decode_all(first["train"], channels, size, resize is not None)
    decode_all(first["test"], channels, tuple(train_images.shape[2:]), resize is not None)
    return class_names, tuple(train_images.shape[1:]), len(files["train"])


def _options(root: str | Path, resize: tuple[int, int] | None, image_shape: tuple[int, int, int] | None):
    """``(root, channels, size)``: the resolved folder, the channels to decode and the height x width
    every image must have (None: the first image's), after checking resize against the input shape."""
    root = Path(root).expanduser().resolve()
    channels = image_shape[0] if image_shape is not None else 3
    if channels not in (1, 3):
        raise SpecError(
            Problem(
                f"the input node has {channels} channels, but image folders are read as RGB (3) or grayscale (1).",
                field="shape",
                hint="set the input node's shape to [3, H, W] or [1, H, W].",
            )
        )
    if resize is not None and image_shape is not None and tuple(resize) != tuple(image_shape[1:]):
        raise SpecError(
            Problem(
                f"[data] resize = {list(resize)} but the input node's shape is {list(image_shape)}.",
                field="resize",
                hint=f"set resize = {list(image_shape[1:])}.",
            )
        )
    size = tuple(resize) if resize is not None else (tuple(image_shape[1:]) if image_shape is not None else None)
    return root, channels, size
