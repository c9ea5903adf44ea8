"""One user's work in the page: an opened scan, the prompt being drawn, the mask, the saved file.

Nothing here knows Gradio (``adapt.app.page`` wires it to the page), and nothing here runs the
model or reads or writes files its own way: a file is read as ``adapt.predict`` reads it
(``adapt.inference.user_files.read_input``), the prompt is the text ``adapt.predict prompt=...`` takes (``parse_prompt``),
the mask comes from the runner (``predict_scan``: a volume prompted on one slice is followed
through it) and is written by ``write_mask`` in the input's format and geometry with
``predict``'s label values in the card's encoding (``mask_values``) -- so a mask saved here equals
``predict``'s for the same prompt.

The page shows slices of the stored voxel grid, as prompts address it: ``x`` is the column and
``y`` the row of a slice (for a NIfTI volume, ``x`` = i and ``y`` = j on slice k), so a click
becomes a prompt coordinate as it is, and the mask is shown where it will be written.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from adapt.errors import ConfigError, DataError
from adapt.data.encoding import LabelEncoding
from adapt.data.formats import FORMATS, mask_name, read_raster
from adapt.data.formats.dicom import is_series, series_name
from adapt.inference.io import Scan, to_unit, write_mask
from adapt.inference.prompt_syntax import parse_prompt
from adapt.inference.runner import Predictor, predict_scan
from adapt.inference.user_files import mask_values, read_input

MODES = ("box", "object click", "background click")
OVERLAY = np.array([255, 40, 40], np.float32)  # mask colour, blended at ``ALPHA``
ALPHA = 0.45
#: Small slices are shown enlarged (whole pixels) to about this side; clicks are mapped back.
DISPLAY_SIDE = 512


def stored_planes(stack: np.ndarray, scan: Scan) -> np.ndarray:
    """Planes ``[Z, H, W]`` on the scan's stack as slices ``[K, rows, columns]`` of its stored grid
    (the identity for 2D images): ``VolumeView.to_volume``, the writer's own mapping, then the
    stored slice axis first with ``y`` (rows) before ``x`` (columns)."""
    if not scan.is_volume:
        return stack
    volume = scan.view.to_volume(stack)
    x_axis, y_axis = scan.view.stored_plane_axes
    return np.transpose(volume, (scan.view.stored_slice_axis, y_axis, x_axis))


def gather_input(paths: Sequence[str | Path], folder: Path) -> Path:
    """The file to read from uploaded ``paths``: one file as it is; several (a DICOM series' slices)
    copied into one folder named after the series (``series_name``: the upload has no folder name, and
    the saved mask is named after it), which ``read_scan`` reads as a series."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("no file was given; open a NIfTI, a DICOM series (its slice files), a PNG/JPEG or a GeoTIFF")
    if len(paths) == 1 and not paths[0].is_dir():
        return paths[0]
    if len(paths) == 1:
        return paths[0]
    series = folder / "series"
    series.mkdir(parents=True, exist_ok=True)
    for path in paths:
        shutil.copy2(path, series / path.name)
    if not is_series(series):
        raise DataError(f"{len(paths)} files were given and they are not a DICOM series; open one image at a time")
    return series.rename(folder / series_name(series))


@dataclass
class Session:
    """The state of one page: what is open, the prompt, the mask.

    Args:
        predictor: the runner (``adapt.inference.onnx_backend.load_predictor``), shared by sessions.
        out_dir: where saved masks go (``<out_dir>/<input name as predict names it>``).
        mask_values: ``card`` (labels stored as the adapter's card stores them, e.g. 0/255) or ``ids``.
    """

    predictor: Predictor
    out_dir: Path
    mask_values: str = "card"
    scan: Scan | None = None
    source: Path | None = None
    shown: np.ndarray | None = None  # [K, rows, columns(, 3)] in [0, 1]: the stored grid's slices
    mask: np.ndarray | None = None  # [K, rows, columns] bool, where the mask will be written
    stack_mask: np.ndarray | None = None  # the runner's masks on the scan's stack
    prompt: str = ""
    corners: list[tuple[int, int]] = field(default_factory=list)
    points: list[tuple[int, int, int]] = field(default_factory=list)
    slice: int = 0
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sam2-adapt-app-")))
    written: set[Path] = field(default_factory=set)  # saved by this session: saving again replaces them

    @property
    def slices(self) -> int:
        return 0 if self.shown is None else len(self.shown)

    @property
    def zoom(self) -> int:
        """Screen pixels per image pixel of the rendered slice (whole numbers: no blur between pixels)."""
        return 1 if self.shown is None else max(1, DISPLAY_SIDE // max(self.shown.shape[1:3]))

    def click_rendered(self, x: int, y: int, mode: str, slice_index: int | None = None) -> str:
        """``click`` at a pixel of the rendered (enlarged) slice."""
        return self.click(int(x) // self.zoom, int(y) // self.zoom, mode, slice_index)

    def open(self, paths: Sequence[str | Path]) -> None:
        """Read an image (or a DICOM series from its slice files) as ``predict`` reads it."""
        self.source = gather_input(paths, self.work / f"upload{len(list(self.work.iterdir()))}")
        self.scan = read_input(self.source, self.predictor.loaded)
        units = to_unit(self.scan, self.predictor.loaded.preprocessing)  # [Z, C, H, W], what the model sees
        if self.scan.is_volume:
            self.shown = stored_planes(units[:, 0], self.scan)
        else:
            planes = units[0]
            self.shown = (planes[0] if len(planes) < 3 else np.moveaxis(planes[:3], 0, -1))[None]
        self.clear()
        self.slice = self.slices // 2

    def clear(self) -> None:
        """Forget the prompt and the mask."""
        self.corners, self.points, self.prompt, self.mask, self.stack_mask = [], [], "", None, None

    def _check_open(self) -> None:
        """Refuse what needs an image before one is open (``open`` sets the scan and its shown planes together)."""
        if self.scan is None or self.shown is None:
            raise DataError("open an image first")

    def click(self, x: int, y: int, mode: str, slice_index: int | None = None) -> str:
        """Add a click at column ``x``, row ``y`` of the shown slice; returns the prompt text.

        ``box``: two clicks give opposite corners (a third starts a new box); ``object click`` /
        ``background click``: a point labelled 1 / 0. Box and clicks must be on one slice.
        """
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r} is not one of {MODES}")
        self._check_open()
        rows, columns = self.shown.shape[1:3]
        last = self.slices - 1
        if not (0 <= int(x) < columns and 0 <= int(y) < rows) or not 0 <= int(slice_index or 0) <= last:
            raise ConfigError(
                f"click at x={x}, y={y} on slice {slice_index}: outside {self.source}, {columns}x{rows} on "
                f"{self.slices} slice(s) (x = column 0..{columns - 1}, y = row 0..{rows - 1}, slice 0..{last}); "
                "click inside the image"
            )
        if slice_index is not None and int(slice_index) != self.slice:
            self.slice = int(slice_index)
            self.corners, self.points = [], []  # a prompt lives on one slice
        if mode == "box":
            self.corners = [(int(x), int(y))] if len(self.corners) != 1 else [self.corners[0], (int(x), int(y))]
        else:
            self.points.append((int(x), int(y), 1 if mode == "object click" else 0))
        self.prompt = self.prompt_text()
        return self.prompt

    def prompt_text(self) -> str:
        """The clicks as ``adapt.predict``'s prompt syntax (an unfinished box is left out)."""
        parts = []
        if len(self.corners) == 2:
            (x0, y0), (x1, y1) = self.corners
            parts.append(f"box {min(x0, x1)},{min(y0, y1)},{max(x0, x1)},{max(y0, y1)}")
        parts += [f"point {x},{y}" + ("" if label else " label=0") for x, y, label in self.points]
        if parts and self.scan is not None and self.scan.is_volume:
            parts[0] += f" slice={self.slice}"
        return "; ".join(parts)

    def segment(self, prompt: str | None = None) -> str:
        """Run the runner on the prompt text (the page's, which the user may have typed); returns a status line."""
        self._check_open()
        text = (prompt if prompt is not None else self.prompt).strip()
        if not text:
            raise ConfigError("draw a box (two clicks) or add a click first, or type a prompt such as box 10,12,30,36")
        parsed = parse_prompt(text)
        if parsed.from_mask is not None:
            raise ConfigError("from_mask prompts need a mask file; use python -m adapt.predict for them")
        self.prompt = text
        self.stack_mask = predict_scan(self.predictor, self.scan, parsed)
        self.mask = stored_planes(self.stack_mask.astype(np.uint8), self.scan).astype(bool)
        if parsed.slice is not None:
            self.slice = int(parsed.slice)
        covered = int(self.mask.any(axis=(1, 2)).sum())
        return f"mask: {int(self.mask.sum())} pixels on {covered} of {self.slices} slice(s)"

    def save(
        self,
        label: int | str | None = None,
        folder: Path | None = None,
        encoding: LabelEncoding | None = None,
        name: str | None = None,
    ) -> Path:
        """Write the mask as ``predict`` writes it (same values, the input's format and geometry) into
        ``folder`` (default ``out_dir``); ``encoding``: a dataset card's label encoding in place of
        ``mask_values`` (the annotation loop writes labels as the card's files store them); ``name``: the
        file's name in place of ``predict``'s (the annotation loop's names the label's format)."""
        if self.stack_mask is None or self.scan is None or self.source is None:
            raise ConfigError("segment first: there is no mask to save")
        prompt = parse_prompt(self.prompt)
        if encoding is None:
            values = mask_values(self.predictor.loaded, prompt, label, self.mask_values)
        else:
            values = encoding.encode(mask_values(self.predictor.loaded, prompt, label, "ids"))
        if name is None:
            stem = f"{self.source.name}_mask" if FORMATS[self.scan.kind].folder else self.source.name
            name = mask_name(self.scan.kind, stem)
        target = Path(folder or self.out_dir) / name
        if target.exists() and target not in self.written:  # another run's mask, or a label: never replaced
            raise DataError(
                f"{target} exists and was not saved by this page (an earlier session's mask, or a label); move it "
                "away to save this mask there, or start the page with another out_dir="
            )
        saved = write_mask(values[self.stack_mask.astype(np.int64)], self.scan, target)
        self.written.add(saved)
        return saved

    def download(self, saved: Path) -> Path:
        """The one file a browser downloads for a saved mask: the file itself, or for a DICOM series' mask
        (a folder) a zip of that folder, made in the session's work folder (a page serves files, not folders)."""
        if not saved.is_dir():
            return saved
        return Path(shutil.make_archive(str(self.work / saved.name), "zip", saved.parent, saved.name))

    def show_labels(self, path: Path) -> int:
        """Show a label file of the open scan (a pre-annotation: its non-zero pixels, non-black ones in a colour
        card's RGB masks) as the mask, without a prompt; returns the pixels it covers. The file is on the scan's
        stored grid, as the mask is shown.

        Raises:
            DataError: no scan is open, or the file's grid is not the scan's.
        """
        self._check_open()
        stored = read_raster(path).array.any(axis=0)
        if self.scan.is_volume:
            x_axis, y_axis = self.scan.view.stored_plane_axes
            stored = np.transpose(stored, (self.scan.view.stored_slice_axis, y_axis, x_axis))
        else:
            stored = stored[None]
        if stored.shape != self.shown.shape[:3]:
            raise DataError(
                f"{path}: {stored.shape[1:]} pixels on {len(stored)} slice(s), but its image "
                f"{self.source} has {self.shown.shape[1:3]} on {self.slices}; run python -m adapt.annotate again"
            )
        self.clear()
        self.mask = stored
        covered = np.flatnonzero(stored.any(axis=(1, 2)))
        if len(covered):
            self.slice = int(covered[len(covered) // 2])
        return int(stored.sum())

    def render(self, slice_index: int | None = None) -> np.ndarray | None:
        """Slice ``slice_index`` as RGB ``uint8`` with the mask blended in red, the box and the clicks drawn,
        enlarged ``zoom`` times."""
        if self.shown is None:
            return None
        k = int(np.clip(self.slice if slice_index is None else slice_index, 0, self.slices - 1))
        plane = self.shown[k]
        rgb = np.repeat(plane[..., None], 3, axis=-1) if plane.ndim == 2 else plane.copy()
        rgb = rgb.astype(np.float32) * 255
        if self.mask is not None:
            inside = self.mask[k]
            rgb[inside] = (1 - ALPHA) * rgb[inside] + ALPHA * OVERLAY
        if k == self.slice:
            self._draw_prompt(rgb)
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
        return rgb.repeat(self.zoom, axis=0).repeat(self.zoom, axis=1)

    def _draw_prompt(self, rgb: np.ndarray) -> None:
        height, width = rgb.shape[:2]
        if len(self.corners) == 2:
            (x0, y0), (x1, y1) = self.corners
            x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
            rgb[y0 : y1 + 1, [x0, x1]] = (255, 220, 0)
            rgb[[y0, y1], x0 : x1 + 1] = (255, 220, 0)
        for x, y in self.corners[:1] if len(self.corners) == 1 else []:
            rgb[y, x] = (255, 220, 0)
        for x, y, label in self.points:
            colour = (40, 220, 40) if label else (60, 120, 255)
            rgb[max(y - 1, 0) : min(y + 2, height), max(x - 1, 0) : min(x + 2, width)] = colour
