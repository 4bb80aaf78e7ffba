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
It is written to a temporary file and renamed into place, so an interrupted run never
leaves a torn cache; a cache that cannot be written (full disk, file too large,
read-only file system) is skipped with one warning and the data set is used as decoded.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import unicodedata
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from graphc.errors import Problem, RunError, SpecError, did_you_mean, printable
from graphc.files import atomic_write, nfc_names
from graphc.lang.hierarchy import hierarchy_paths, listed_twice, named_after_label, table_children
from graphc.runtime.data.image_files import read_image_file
from graphc.runtime.data.split import Split, compose, default_data_dir

SUFFIXES = (".png", ".jpg", ".jpeg")
CACHE_FORMAT = "graphc-imagefolder/1"
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


def scan(root: Path) -> tuple[list[str], dict[str, list[tuple[str, int]]], str]:
    """Class names, ``{split: [(file path, class index)]}`` and a fingerprint of every file.

    Paths stay ``str``: building 60,000 ``Path`` objects would cost more than the stats."""
    if not root.is_dir():
        raise RunError(f"the image folder {root} does not exist (or is not a directory); expected {LAYOUT}.")
    for split in ("train", "test"):
        if (root / split).is_symlink():
            _follow(root / split, root)
        if not (root / split).is_dir():
            raise RunError(f"the image folder {root} has no {split}/ directory; expected {LAYOUT}.")
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
    classes: list[str], label: str, hierarchy: dict[str, dict[str, list[str]]], root: Path
) -> tuple[dict[str, list[str]], dict[tuple[str, str], torch.Tensor]]:
    """Class names per label field and, per hierarchy table, its child class -> group index map,
    keyed ``(child field, table field)``. The child is the folder label, or for a nested table the
    table whose groups it lists (graphc.lang.hierarchy.table_children)."""
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
                            f"group '{group}' lists class '{member}', but {root / 'train'} has no folder of that name."
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
                        f"class '{name}' (folder {root / 'train' / name}) is in no group; every class must be "
                        "mapped exactly once."
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


def decode_all(paths: list[str], channels: int, size: tuple[int, int] | None, resize: bool) -> torch.Tensor:
    """Decode ``paths`` into one uint8 (N, C, H, W) tensor, on a few threads (file reads and
    torch ops release the GIL, so this gains a little even on small machines)."""
    from PIL.Image import DecompressionBombWarning  # read_image_file raises instead

    if size is None:  # no input shape and no resize: the first image sets the size
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
            warnings.filterwarnings("ignore", category=DecompressionBombWarning)
            size = tuple(_decode(paths[0], channels, None, False).shape[1:])
    images = torch.empty(len(paths), channels, *size, dtype=torch.uint8)

    def work(start: int) -> None:
        for i in range(start, min(start + 256, len(paths))):
            images[i] = _decode(paths[i], channels, size, resize)

    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        # torchvision >= 0.29 marks its image decoders deprecated in favour of torchcodec; they still work.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        warnings.filterwarnings("ignore", category=DecompressionBombWarning)
        list(pool.map(work, range(0, len(paths), 256)))  # list(): re-raise the first error
    return images


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
    if not isinstance(cached, dict) or cached.get("format") != CACHE_FORMAT or cached.get("key") != key:
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


def load_imagefolder(
    root: str | Path,
    *,
    label: str = "fine",
    hierarchy: dict[str, dict[str, list[str]]] | None = None,
    resize: tuple[int, int] | None = None,
    image_shape: tuple[int, int, int] | None = None,
    cache_dir: Path | None = None,
):
    """Return ``(train_pool, test, class_names, hierarchy)`` of an image folder."""
    root, channels, size = _options(root, resize, image_shape)
    classes, files, key = scan(root)
    class_names, links = derive_labels(classes, label, hierarchy or {}, root)
    # Every field's labels from the folder labels: a nested field through its chain (fine -> coarse -> super).
    maps = {path[-1]: compose(links, path) for path in hierarchy_paths(links) if path[0] == label}

    path = cache_file(root, channels, size, resize is not None, cache_dir or default_data_dir() / "imagefolder-cache")
    cached = _read_cache(path, key)
    if cached is None:
        train_paths, test_paths = [p for p, _ in files["train"]], [p for p, _ in files["test"]]
        train_images = decode_all(train_paths, channels, size, resize is not None)
        # The test images must match the training images' size even when the first image set it.
        test_images = decode_all(test_paths, channels, tuple(train_images.shape[2:]), resize is not None)
        cached = {
            "format": CACHE_FORMAT,
            "key": key,
            "classes": classes,
            "train_images": train_images,
            "train_labels": torch.tensor([c for _, c in files["train"]]),
            "test_images": test_images,
            "test_labels": torch.tensor([c for _, c in files["test"]]),
        }
        _write_cache(path, cached)

    def split(name: str) -> Split:
        folder_labels = cached[f"{name}_labels"].to(torch.int64)
        labels = {label: folder_labels, **{field: mapping[folder_labels] for field, mapping in maps.items()}}
        return Split(images=cached[f"{name}_images"].contiguous(), labels=labels)

    return split("train"), split("test"), class_names, links


def probe_imagefolder(
    root: str | Path,
    *,
    label: str = "fine",
    hierarchy: dict[str, dict[str, list[str]]] | None = None,
    resize: tuple[int, int] | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> tuple[dict[str, list[str]], tuple[int, ...], int]:
    """``(class_names, image shape, training images)`` of an image folder, checked as
    :func:`load_imagefolder` checks it (same functions, same messages) but from the folder
    listing and the first image of every class in each split: what ``graphc check --data``
    reads, in seconds whatever the size of the set."""
    root, channels, size = _options(root, resize, image_shape)
    classes, files, _ = scan(root)
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
