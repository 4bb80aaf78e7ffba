"""Label tables: images listed in a CSV or TSV file, one column per label field (``[data] dataset = "table"``)::

    ROOT/train.csv    image,class,animal,brightness,colours        ([data] train, default train.csv)
                      train/cat/0001.png,cat,yes,120.5,red;green
                      train/ship/0002.png,ship,no,,-
    ROOT/test.csv     the same columns                             ([data] test, default test.csv)

- ``image`` (required) is the image's path relative to ROOT, with ``/`` between folders. An absolute
  path, a ``..`` part, or a symbolic link (anywhere on the path) that leads out of ROOT is refused: a
  table is untrusted input, as an image folder is. Every image must exist, be named once in the
  training and test tables together (a repeat would be trained on twice, or trained and tested on)
  and have the size of the others (or ``[data] resize``).
- The other columns a head names (its ``task``) are parsed by the head's ``type``; columns no head
  names are ignored. Per cell (surrounding whitespace is stripped first):

  ==============  ==========================================================  ================
  type            cell                                                        missing label
  ==============  ==========================================================  ================
  classification  the class name                                              empty cell
  binary          ``1``/``0``, ``true``/``false``, ``yes``/``no`` (any case)  empty cell
  multilabel      the labels that apply, separated by ``;`` (``red;green``);  empty cell
                  ``-`` = none applies (a known empty set)
  regression      ``outputs`` numbers separated by ``;`` (``1.5`` or          empty cell
                  ``0.1;2``); ``nan`` and ``inf`` are refused
  ==============  ==========================================================  ================

  An empty cell, or one of only spaces, is always a missing label (the loss and every metric of that
  head skip the image). For a multilabel column "no label applies" is therefore written ``-``: it is
  a label row of zeros, trained on like any other, while an empty cell is a row the head never sees.
  (A cell of only spaces is missing, not "none applies": a cell that looks empty must never silently
  become a training example.)
- Classes (classification): the head's ``classes`` list, in its order, or the sorted distinct values
  of the training table; labels (multilabel): the head's ``labels`` or the sorted distinct labels of
  the training table. A value of either table not among them is an error; so is a column with no
  label at all in the training table, and a classification column of fewer than two classes.
- ``[data] label = COLUMN`` with ``[data.hierarchy]`` derives coarser label fields from a
  classification column, as an image folder does from its class folders (a missing class is a
  missing coarse label).

Every problem in a table names the file and its line (line 1 is the header) and exits 2 (a
SpecError); a missing table or image, or a link out of ROOT, exits 1 (a RunError), as in an image
folder. The
validation split is carved out of the training table with ``[data] val_fraction`` and ``split_seed``
(graphc.runtime.data.split.split_indices); limits decode only the images a run uses. Images are
decoded by the image folder's reader (graphc.runtime.data.imagefolder: torchvision.io, size checks,
decompression-bomb and regular-file checks) into a cache in ``default_data_dir()/table-cache/``.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch

from graphc.errors import Problem, RunError, SpecError, did_you_mean, printable
from graphc.lang.hierarchy import hierarchy_paths
from graphc.lang.spec import PARTIAL_LABELS
from graphc.runtime.data.imagefolder import Folder, _options, decode_all, derive_labels, read_imagefolder
from graphc.runtime.data.split import (
    BINARY_CLASS_NAMES,
    MISSING,
    Dataset,
    Split,
    compose,
    default_data_dir,
    labelled,
    split_indices,
)

IMAGE = "image"  # the column of image paths
NONE_APPLIES = "-"  # a multilabel cell: a known empty set of labels (an empty cell is a missing label)
SEPARATOR = ";"  # between a multilabel cell's labels and a regression cell's numbers
BINARY = {"1": 1, "true": 1, "yes": 1, "0": 0, "false": 0, "no": 0}
TYPES = ("classification", "binary", "multilabel", "regression")
FLOAT32_MAX = torch.finfo(torch.float32).max


@dataclass(frozen=True)
class Column:
    """How to read one label column: the head type, and the class (or label) names where the spec fixes them."""

    name: str
    type: str = "classification"
    classes: list[str] | None = None  # classification: the class names in index order (None: from the table)
    labels: list[str] | None = None  # multilabel: the label names in index order (None: from the table)
    outputs: int = 1  # regression: numbers per cell


def label_columns(spec) -> dict[str, Column] | None:
    """What ``load_dataset``/``probe_dataset`` take as ``columns`` for ``spec``: the columns its heads read
    where the data set has columns (a label table, CelebA's attributes: :data:`PARTIAL_LABELS`), else None."""
    return columns_of(spec) if spec.data.dataset in PARTIAL_LABELS else None


def columns_of(spec) -> dict[str, Column]:
    """The label columns the spec's heads read (task name -> Column), plus ``[data] label`` as a
    classification column when the spec has ``[data.hierarchy]`` tables (the fields they derive are
    not columns). Two heads that read one column as different types (or with different class or
    label lists) are a SpecError naming both."""
    data = spec.data
    derived = set(data.hierarchy) - {data.label}
    columns: dict[str, Column] = {}
    readers: dict[str, str] = {}
    problems: list[Problem] = []
    if data.hierarchy:
        columns[data.label] = Column(data.label)
        readers[data.label] = "[data] label"
    for node in spec.nodes:
        if getattr(node, "kind", None) != "head":
            continue
        task = node.task_name
        if task in derived:
            continue
        column = Column(
            task,
            node.type,
            classes=list(node.classes) if isinstance(node.classes, list) else None,
            labels=list(node.labels) if node.labels is not None else None,
            outputs=node.outputs or 1,
        )
        known = columns.get(task)
        if known is None or (readers[task] == "[data] label" and column.type == "classification"):
            if known is None or column.classes is not None:
                columns[task], readers[task] = column, f"head '{node.name}'"
            continue
        if known != column:
            what = (
                f"as {column.type}, but {readers[task]} reads it as {known.type}"
                if known.type != column.type
                else f"with other classes, labels or outputs than {readers[task]} does"
            )
            problems.append(
                Problem(
                    f"reads the label column '{task}' {what}; one column has one meaning.",
                    node=node.name,
                    field="type" if known.type != column.type else "task",
                    hint="give the heads the same type and class lists, or make them read different columns.",
                )
            )
    if problems:
        raise SpecError(problems)
    return columns


# --------------------------------------------------------------------------- reading a table


@dataclass
class Table:
    """A label table as read: per row its image (the file inside ROOT), line and raw cells."""

    path: Path
    images: list[str]  # absolute paths (inside ROOT)
    names: list[str]  # the image cells, as written
    lines: list[int]  # the line each row starts on (1 = the header)
    cells: dict[str, list[str]]  # column -> the row's cell, stripped
    key: str  # a fingerprint of every image file (path, size, times, inode), for the decode cache
    targets: list[str] = field(default_factory=list)  # every image's resolved path (the duplicates check)


def _content_error(path: Path, line: int, message: str, hint: str | None = None):
    # No Problem field: that names a spec field, and the message names the table's column itself.
    return SpecError(Problem(message, file=path, line=line, hint=hint))


def table_path(root: Path, name: str, which: str) -> Path:
    """The table ``name`` of ROOT (``[data] train`` / ``test``); a name that leaves ROOT is refused."""
    relative = PurePosixPath(name.replace("\\", "/"))
    if relative.is_absolute() or PureWindowsPath(name).drive or ".." in relative.parts:
        raise SpecError(
            Problem(
                f"the {which} table '{name}' is not a path inside the data folder {root}.",
                field=f"data.{which}",
                hint="name the table relative to [data] root (--data-dir), e.g. train.csv.",
            )
        )
    if relative.suffix.lower() not in (".csv", ".tsv"):
        raise SpecError(
            Problem(
                f"the {which} table '{name}' is neither a .csv nor a .tsv file.",
                field=f"data.{which}",
                hint="name a .csv (comma-separated) or .tsv (tab-separated) file.",
            )
        )
    return root / relative


def read_table(path: str | Path, columns: dict[str, Column], root: str | Path) -> Table:
    """Read the table at ``path`` (.csv or .tsv; utf-8, a byte-order mark tolerated): check its
    ``image`` column (paths inside ``root``, present, each named once) and that it has every column of
    ``columns``; keep the raw cells of those columns. The cells are parsed by :func:`encode`."""
    path, root = Path(path), Path(root).resolve()
    # The table is untrusted input as its images are: a link out of ROOT is not followed (its text would be
    # read and quoted in the messages)
    real = os.path.realpath(path)
    if os.path.lexists(path) and not real.startswith(os.path.join(str(root), "")):
        raise RunError(
            f"the label table {path} is a symbolic link to {real}, outside the data folder {root}; graphc does not "
            "follow links out of the data folder. Copy the table in, or point [data] root (--data-dir) at its folder."
        )
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise RunError(
            f"the label table {path} does not exist. Point [data] root (--data-dir) at the folder that holds it, "
            "or set [data] train / test to its name."
        ) from None
    except UnicodeDecodeError as exc:
        raise _content_error(
            path, 1, f"is not UTF-8 text ({exc.reason} at byte {exc.start}).", "save the table as UTF-8."
        ) from None
    except OSError as exc:
        raise RunError(f"the label table {path} cannot be read ({exc.strerror or exc}); make it readable.") from None
    reader = csv.reader(text.splitlines(keepends=True), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise _content_error(path, 1, f"cannot be parsed ({exc}).") from None
    if not header or not any(h.strip() for h in header):
        raise _content_error(path, 1, "has no header line; the first line names the columns (image, ...).")
    header = [unicodedata.normalize("NFC", h.strip()) for h in header]
    for name in header:
        if header.count(name) > 1:
            raise _content_error(path, 1, f"names the column '{printable(name)}' twice.")
    if IMAGE not in header:
        raise _content_error(
            path,
            1,
            f"has no '{IMAGE}' column (it has {', '.join(map(printable, header))}).",
            did_you_mean(IMAGE, header) or f"add a column '{IMAGE}': each image's path relative to {root}.",
        )
    for name in columns:
        if name not in header:
            raise _content_error(
                path,
                1,
                f"has no column '{name}', which a head reads (its task).",
                did_you_mean(name, [h for h in header if h != IMAGE]) or "add the column, or rename the head's task.",
            )
    where = {name: header.index(name) for name in [IMAGE, *columns]}
    table = Table(path, [], [], [], {name: [] for name in columns}, "")
    fingerprint = hashlib.sha256()
    seen: dict[str, int] = {}
    line = 1
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader, None)
        except csv.Error as exc:
            raise _content_error(path, start, f"cannot be parsed ({exc}).") from None
        if row is None:
            break
        line = start
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # a blank line
        if len(row) != len(header):
            raise _content_error(
                path,
                line,
                f"has {len(row)} cells but the header names {len(header)} columns.",
                "give every row one cell per column (an empty cell is a missing label).",
            )
        name = row[where[IMAGE]].strip()
        image, target, stat = _image(path, line, name, root)
        first = seen.setdefault(target, line)
        if first != line:
            raise _content_error(
                path,
                line,
                f"names the image {printable(name)} again (line {first} names it too): it would be trained on twice.",
                "name each image once.",
            )
        fingerprint.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}\0{stat.st_ctime_ns}\n".encode())
        table.images.append(image)
        table.targets.append(target)
        table.names.append(name)
        table.lines.append(line)
        for column in columns:
            table.cells[column].append(row[where[column]].strip())
    if not table.images:
        raise _content_error(path, 1, "lists no images (only a header).", "add a row per image.")
    table.key = fingerprint.hexdigest()
    return table


def _image(path: Path, line: int, name: str, root: Path) -> tuple[str, str, os.stat_result]:
    """The image file a table cell names: (its path inside root, its resolved path, its stat)."""
    inside = os.path.join(str(root), "")  # root/ : a resolved path inside root starts with it
    if not name:
        raise _content_error(
            path, line, "has an empty image cell.", "give the image's path relative to the data folder."
        )
    relative = PurePosixPath(name.replace("\\", "/"))
    if relative.is_absolute() or PureWindowsPath(name).drive or ".." in relative.parts:
        raise _content_error(
            path,
            line,
            f"names the image {printable(name)}, a path out of the data folder {root}; graphc reads "
            "only images inside it (a table is untrusted input).",
            "write each image's path relative to [data] root (--data-dir), without '..'.",
        )
    # os.path on strings, not pathlib: a table names every image (60,000 for CIFAR-10) and Path objects cost
    # several times the system calls. realpath(strict=True) follows every link on the path, as resolve does.
    image = os.path.join(root, *relative.parts)
    try:
        target = os.path.realpath(image, strict=True)
    except FileNotFoundError:
        raise RunError(f"{path}:{line}: the image {image} does not exist; add it or remove the row.") from None
    except OSError as exc:  # a link loop, no permission
        raise RunError(f"{path}:{line}: the image {image} cannot be read ({exc.strerror or exc}).") from None
    if not target.startswith(inside):
        raise RunError(
            f"{path}:{line}: the image {image} is a symbolic link to {target}, outside the data folder {root}; graphc "
            "does not follow links out of the data folder. Copy the file in, or point [data] root (--data-dir) at a "
            "folder that holds it."
        )
    try:
        stat = os.stat(target)
    except OSError as exc:
        raise RunError(f"{path}:{line}: the image {image} cannot be read ({exc.strerror or exc}).") from None
    return image, target, stat


# --------------------------------------------------------------------------- the labels


def vocabulary(table: Table, columns: dict[str, Column]) -> dict[str, list[str]]:
    """Class names per label field, from the training table: listed (classification classes,
    multilabel labels) or the sorted distinct values; binary ``["no", "yes"]``; regression the
    output names. A column with no label at all is an error (line 1, the header)."""
    names: dict[str, list[str]] = {}
    for name, column in columns.items():
        cells = table.cells[name]
        if not any(cells):
            raise _content_error(
                table.path,
                1,
                f"the column '{name}' has no label at all (every cell is empty, a missing label); "
                "a head cannot learn from it.",
                "fill in labels, or remove the head.",
            )
        if column.type == "classification":
            found = sorted({unicodedata.normalize("NFC", c) for c in cells if c})
            names[name] = list(column.classes) if column.classes is not None else found
            if len(names[name]) < 2:
                raise _content_error(
                    table.path,
                    1,
                    f"the column '{name}' has a single class ({printable(found[0])}); a classifier needs at least two.",
                    "label the images with two classes or more.",
                )
        elif column.type == "multilabel":
            found = sorted(
                {
                    label
                    for c, line in zip(cells, table.lines)
                    for label in _multilabel_cell(table.path, line, name, c) or ()
                }
            )
            names[name] = list(column.labels) if column.labels is not None else found
            if not names[name]:
                raise _content_error(
                    table.path,
                    1,
                    f"the multilabel column '{name}' lists no label in any row (every cell is "
                    f"'{NONE_APPLIES}' or empty).",
                    "list the labels that apply, separated by ';'.",
                )
        elif column.type == "binary":
            names[name] = list(BINARY_CLASS_NAMES)
        elif column.type == "regression":
            names[name] = [name] if column.outputs == 1 else [f"{name}[{k}]" for k in range(column.outputs)]
        else:
            raise ValueError(f"unknown head type {column.type!r}; expected one of {TYPES}")
    return names


def _multilabel_cell(path: Path, line: int, column: str, cell: str) -> list[str] | None:
    """The labels of a multilabel cell: None (empty: missing), [] ('-': none applies) or the labels."""
    if not cell:
        return None
    if cell == NONE_APPLIES:
        return []
    labels = [unicodedata.normalize("NFC", label.strip()) for label in cell.split(SEPARATOR)]
    if any(not label or label == NONE_APPLIES for label in labels):
        raise _content_error(
            path,
            line,
            f"the multilabel cell '{printable(cell)}' of the column '{column}' has an empty label or '{NONE_APPLIES}' among labels.",
            f"separate the labels with one ';'; write '{NONE_APPLIES}' alone when none applies, or "
            "leave the cell empty when the labels are unknown.",
        )
    return labels


def encode(table: Table, columns: dict[str, Column], names: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """The label tensors of ``table`` (graphc.runtime.data.split's forms: a missing label -1, a row of
    -1 or of NaN); a value not among ``names`` (the training table's) is an error with its line."""
    labels: dict[str, torch.Tensor] = {}
    n = len(table.images)
    for name, column in columns.items():
        cells = table.cells[name]
        if column.type == "classification":
            index = {c: i for i, c in enumerate(names[name])}
            found = [MISSING] * n  # Python lists, then one tensor: a tensor write per cell is slow
            for i, cell in enumerate(cells):
                if cell:
                    cell = unicodedata.normalize("NFC", cell)
                    if cell not in index:
                        raise _unknown_value(table, i, name, cell, names[name], "class")
                    found[i] = index[cell]
            values = torch.tensor(found, dtype=torch.int64)
        elif column.type == "binary":
            found = [MISSING] * n
            for i, cell in enumerate(cells):
                if cell:
                    if cell.lower() not in BINARY:
                        raise _content_error(
                            table.path,
                            table.lines[i],
                            f"the binary cell '{printable(cell)}' of the column '{name}' is not yes/no.",
                            "write 1/0, true/false or yes/no (any case), or leave it empty (missing).",
                        )
                    found[i] = BINARY[cell.lower()]
            values = torch.tensor(found, dtype=torch.int64)
        elif column.type == "multilabel":
            index = {c: i for i, c in enumerate(names[name])}
            rows = []
            for i, cell in enumerate(cells):
                found = _multilabel_cell(table.path, table.lines[i], name, cell)
                row = [MISSING] * len(index) if found is None else [0] * len(index)
                for label in found or ():
                    if label not in index:
                        raise _unknown_value(table, i, name, label, names[name], "label")
                    row[index[label]] = 1
                rows.append(row)
            values = torch.tensor(rows, dtype=torch.int64).reshape(n, len(index))
        else:  # regression
            missing = [math.nan] * column.outputs
            rows = [_numbers(table, i, name, cell, column.outputs) if cell else missing for i, cell in enumerate(cells)]
            values = torch.tensor(rows, dtype=torch.float64).to(torch.float32).reshape(n, column.outputs)
        labels[name] = values
    return labels


def _numbers(table: Table, i: int, name: str, cell: str, outputs: int) -> list[float]:
    parts = cell.split(SEPARATOR)
    shape = f"{outputs} number{'s' if outputs > 1 else ''}" + (" separated by ';'" if outputs > 1 else "")
    if len(parts) != outputs:
        raise _content_error(
            table.path,
            table.lines[i],
            f"the regression cell '{printable(cell)}' of the column '{name}' has {len(parts)} "
            f"value(s), but the head predicts {outputs}.",
            f"write {shape}, or leave the cell empty (missing).",
        )
    numbers = []
    for part in parts:
        try:
            number = float(part.strip())
        except ValueError:
            number = None
        # float32 holds the labels: a finite float64 beyond its range would become inf there
        if number is None or not math.isfinite(number) or abs(number) > FLOAT32_MAX:
            raise _content_error(
                table.path,
                table.lines[i],
                f"the regression cell '{printable(cell)}' of the column '{name}' is not "
                f"{'a finite number' if outputs == 1 else shape + ' (finite)'}.",
                "write a number such as 1.5 (nan and inf are refused), or leave the cell empty (missing).",
            )
        numbers.append(number)
    return numbers


def _unknown_value(table: Table, i: int, name: str, value: str, known: list[str], what: str) -> SpecError:
    plural = "classes" if what == "class" else "labels"
    shown = ", ".join(map(printable, known[:12])) + (", ..." if len(known) > 12 else "")
    return _content_error(
        table.path,
        table.lines[i],
        f"the {what} '{printable(value)}' of the column '{name}' is not among the {plural} of the training table or the head's "
        f"list ({shown}).",
        did_you_mean(value, known) or f"fix the {what}, or list it in the head's {plural}.",
    )


# --------------------------------------------------------------------------- the data set


@dataclass(frozen=True)
class Tables:
    """Both tables of a data set, read and parsed: what :func:`load_table` decodes and :func:`probe_table` reports."""

    root: Path
    train: Table
    test: Table
    columns: dict[str, Column]
    class_names: dict[str, list[str]]
    types: dict[str, str]
    links: dict[tuple[str, str], torch.Tensor]
    train_labels: dict[str, torch.Tensor]
    test_labels: dict[str, torch.Tensor]


def open_tables(data, root: str | Path, columns: dict[str, Column] | None = None, where: str | None = None) -> Tables:
    """Read and check the training and test tables of ``data`` (a DataSpec) under ``root``, decoding no
    image. ``columns`` None: only ``[data] label`` when the spec has a hierarchy."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise RunError(
            f"the data folder {root} does not exist (or is not a directory); it must hold the label tables "
            f"{data.train} and {data.test} and the images they name. Point {where or '--data-dir, or [data] root'} at it."
        )
    if columns is None:
        columns = {data.label: Column(data.label)} if data.hierarchy else {}
    columns = dict(columns)
    if IMAGE in columns:
        raise SpecError(
            Problem(
                f"a head reads the column '{IMAGE}' as labels, but in a label table it holds the image paths.",
                field="task",
                hint="give the head another task (a label column's name).",
            )
        )
    if data.hierarchy and data.label in columns and columns[data.label].type != "classification":
        raise SpecError(
            Problem(
                f"[data.hierarchy] groups the classes of the column '{data.label}' ([data] label), but a head reads "
                f"it as {columns[data.label].type}.",
                field="data.label",
                hint="a hierarchy groups a classification column: set [data] label to one.",
            )
        )
    train = read_table(table_path(root, data.train, "train"), columns, root)
    test = read_table(table_path(root, data.test, "test"), columns, root)
    trained = dict(zip(train.targets, train.lines))
    for i, target in enumerate(test.targets):
        if target in trained:
            raise _content_error(
                test.path,
                test.lines[i],
                f"names the image {printable(test.names[i])}, which the training table "
                f"{train.path} names too (line {trained[target]}): it would be both trained and tested on.",
                "give each image to one table.",
            )
    class_names = vocabulary(train, columns)
    train_labels, test_labels = encode(train, columns, class_names), encode(test, columns, class_names)
    links: dict[tuple[str, str], torch.Tensor] = {}
    if data.hierarchy:
        label = data.label
        derived, links = derive_labels(
            class_names[label],
            label,
            data.hierarchy,
            train.path.parent,
            classes_from=f"the column {label!r} of {train.path}",
        )
        maps = {path[-1]: compose(links, path) for path in hierarchy_paths(links) if path[0] == label}
        for labels in (train_labels, test_labels):
            fine = labels[label]
            for field_name, mapping in maps.items():  # a missing class is a missing coarse label
                labels[field_name] = torch.where(fine >= 0, mapping[fine.clamp(min=0)], MISSING)
        class_names = {**class_names, **{f: names for f, names in derived.items() if f != label}}
    types = {name: column.type for name, column in columns.items() if column.type != "classification"}
    return Tables(root, train, test, columns, class_names, types, links, train_labels, test_labels)


def load_table(
    data,
    root: str | Path,
    *,
    columns: dict[str, Column] | None = None,
    image_shape: tuple[int, int, int] | None = None,
    limit_train: int | None = None,
    limit_val: int | None = None,
    cache_dir: Path | None = None,
    where: str | None = None,
    report: Callable[[str], None] | None = None,
) -> Dataset:
    """The label-table data set of ``data`` (a DataSpec): the training table split into train and
    validation (val_fraction, split_seed), the test table whole. With limits, only the images a run
    uses are decoded (the first N of each shuffled part, as a full read would give them)."""
    tables = open_tables(data, root, columns, where)
    root_path, channels, size = _options(tables.root, data.resize, image_shape)
    n = len(tables.train.images)
    train_index, val_index = split_indices(n, data.val_fraction, data.split_seed)
    train_index, val_index = train_index[:limit_train], val_index[:limit_val]
    names = (data.train, data.test)
    folder = Folder(
        root=root_path,
        channels=channels,
        size=size,
        resize=data.resize is not None,
        classes=[],
        files={  # "class" = the row of the table: read_imagefolder returns it as the label "row"
            "train": [(path, i) for i, path in enumerate(tables.train.images)],
            "test": [(path, i) for i, path in enumerate(tables.test.images)],
        },
        key=hashlib.sha256(f"{tables.train.key}\0{tables.test.key}".encode()).hexdigest(),
        label="row",
        class_names={},
        links={},
        maps={},
    )
    # One cache per pair of tables (two tables over one folder would otherwise overwrite each other's cache).
    cache = (cache_dir or default_data_dir() / "table-cache") / hashlib.sha256("\0".join(names).encode()).hexdigest()[
        :12
    ]
    chosen, test = read_imagefolder(folder, torch.cat([train_index, val_index]), cache_dir=cache, report=report)
    rows = chosen.labels["row"]

    def split(images: torch.Tensor, index: torch.Tensor, labels: dict[str, torch.Tensor]) -> Split:
        return Split(images=images.contiguous(), labels={f: v[index].contiguous() for f, v in labels.items()})

    k = len(train_index)
    return Dataset(
        name="table",
        train=split(chosen.images[:k], rows[:k], tables.train_labels),
        val=split(chosen.images[k:], rows[k:], tables.train_labels),
        test=split(test.images, test.labels["row"], tables.test_labels),
        class_names=tables.class_names,
        hierarchy=tables.links,
        types=tables.types,
    )


def labelled_counts(labels: dict[str, torch.Tensor], index: torch.Tensor | None = None) -> dict[str, int]:
    """Label field -> the number of images (at ``index``, None: all) that have its label."""
    return {f: int(labelled(v if index is None else v[index]).sum()) for f, v in labels.items()}


def probe_table(
    data,
    root: str | Path,
    *,
    columns: dict[str, Column] | None = None,
    image_shape: tuple[int, int, int] | None = None,
    where: str | None = None,
) -> tuple[dict[str, list[str]], dict[str, str], tuple[int, ...], int, dict[str, dict[str, int]]]:
    """``(class_names, types, image shape, training pool size, labelled)`` of a label-table data set,
    checked as :func:`load_table` checks it (both tables read whole: they are small text) but decoding
    only the first image of each table. ``labelled``: split ("train", "val", "test") -> label field ->
    images with that label, the validation split computed as a load computes it."""
    tables = open_tables(data, root, columns, where)
    _, channels, size = _options(tables.root, data.resize, image_shape)
    resize = data.resize is not None
    first = decode_all([tables.train.images[0]], channels, size, resize)
    decode_all([tables.test.images[0]], channels, tuple(first.shape[2:]), resize)
    train_index, val_index = split_indices(len(tables.train.images), data.val_fraction, data.split_seed)
    counts = {
        "train": labelled_counts(tables.train_labels, train_index),
        "val": labelled_counts(tables.train_labels, val_index),
        "test": labelled_counts(tables.test_labels),
    }
    return tables.class_names, tables.types, tuple(first.shape[1:]), len(tables.train.images), counts
