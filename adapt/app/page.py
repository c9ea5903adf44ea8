"""The Gradio page of ``python -m adapt.app``: open a scan, scroll its slices, draw a prompt, see
and save the mask.

The page is a thin layer over ``adapt.app.session.Session`` (one per browser tab, in
``gr.State``); the model is loaded once, when the page is built, through the same loader as
``adapt.predict`` (``load_predictor``: ``backend=torch`` or an ONNX export with ``backend=onnx``).
A box is two clicks on the image (opposite corners); object and background clicks are single
clicks; the prompt box shows the prompt in ``adapt.predict``'s syntax and may also be typed.
Components carry ``elem_id``s (``upload``, ``slice``, ``mode``, ``view``, ``prompt``, ``segment``,
``clear``, ``save``, ``status``, ``saved_path``) for scripts and tests. With a worklist
(``python -m adapt.app ... worklist=<out>/worklist.csv``) the page adds the annotation loop
(``loop_panel`` over ``adapt.app.annotation.Loop``): ``worklist``, ``previous``, ``next``, ``accept``,
``save_label``, ``retrain`` and ``retrain_command``; the first case opens when the page loads.
"""

import functools
from pathlib import Path
from typing import Any, Callable, NamedTuple

import gradio as gr

from adapt.app import retrain
from adapt.app.annotation import COLUMNS, Loop
from adapt.app.session import MODES, Session
from adapt.errors import AdaptError
from adapt.data.encoding import label_names
from adapt.inference.runner import Predictor


def _describe(predictor: Predictor) -> str:
    loaded = predictor.loaded
    meta = loaded.metadata
    kind = (meta.get("adapter") or {}).get("kind", "?")
    export = meta.get("export")
    backend = f"ONNX ({export.get('quantize') or 'none'} quantisation)" if export else "torch"
    random = "" if loaded.model_info.pretrained else " -- **trained on RANDOM base weights (a test adapter)**"
    labels = ", ".join(f"{k}={v}" for k, v in label_names(loaded.label_map).items()) or "-"
    return (
        f"### sam2-adapt: {loaded.path.name}\n{kind} adapter on `{loaded.model_info.name}` at "
        f"{loaded.model_info.image_size} px, run by {backend}{random}. Data card `{meta.get('data_card', '?')}`, "
        f"labels {labels}.\n\nOpen a NIfTI, the files of a DICOM series, a PNG/JPEG or a GeoTIFF. **Box**: click two "
        "opposite corners; **object / background click**: one click each. *Segment* runs the adapter (a volume is "
        "followed from the prompted slice through the whole scan); *Save mask* writes it in the input's format and "
        "geometry, as `python -m adapt.predict` does for the same prompt."
    )


def _guarded(handler: Callable[..., tuple], outputs: int) -> Callable[..., tuple]:
    """A user's mistake (no file, a bad prompt, an unreadable file) becomes the status line -- the
    handler's last output -- and the other outputs stay as they are."""

    @functools.wraps(handler)  # Gradio reads the handler's signature (gr.SelectData) through __wrapped__
    def run(*args: Any) -> tuple:
        try:
            return handler(*args)
        except AdaptError as err:
            return (*[gr.skip()] * (outputs - 1), f"error: {err}")

    return run


def _slider(session: Session) -> Any:
    """The slice slider of the open scan. Gradio refuses a slider whose maximum is its minimum: a 2D image
    keeps 0..1, not movable."""
    top = max(session.slices - 1, 0)
    return gr.Slider(minimum=0, maximum=max(top, 1), value=session.slice, step=1, interactive=top > 0)


def build_page(
    predictor: Predictor,
    out_dir: str | Path,
    mask_values: str = "card",
    worklist: str | Path | None = None,
    source: str | None = None,
) -> Any:
    """The ``gr.Blocks`` page over ``predictor``; masks are saved under ``out_dir``, storing labels as
    ``mask_values`` says (``card``: as the adapter's card stores them; ``ids``: label ids). With a
    ``worklist`` (``python -m adapt.annotate``'s) the page also runs the annotation loop
    (``adapt.app.annotation``) and its retrain from ``source`` (the adapter as the user named it)."""
    out_dir = Path(out_dir)

    def session_of(session: Session | None) -> Session:
        return session if session is not None else Session(predictor, out_dir, mask_values=mask_values)

    def opened(files: list[str] | None, session: Session | None) -> tuple:
        session = session_of(session)
        session.open(files or [])
        return (
            session,
            session.render(),
            _slider(session),
            "",
            f"opened {session.source.name}: {session.slices} slice(s) of {session.shown.shape[1:3]} (rows, columns)",
        )

    def scrolled(index: float, session: Session | None) -> Any:
        return session.render(int(index)) if session is not None else None

    def clicked(mode: str, index: float, session: Session | None, event: gr.SelectData) -> tuple:
        session = session_of(session)
        if session.shown is None:
            raise AdaptError("open an image first")
        text = session.click_rendered(int(event.index[0]), int(event.index[1]), mode, int(index))
        return session, session.render(int(index)), text, f"{mode}: {text}"

    def segmented(text: str, session: Session | None) -> tuple:
        session = session_of(session)
        status = session.segment(text)
        return session, session.render(), gr.Slider(value=session.slice), status

    def saved(session: Session | None) -> tuple:
        session = session_of(session)
        path = session.save()
        return str(session.download(path)), str(path), f"saved {path}"

    def cleared(session: Session | None) -> tuple:
        session = session_of(session)
        session.clear()
        return session, session.render(), "", "prompt and mask cleared"

    with gr.Blocks(title="sam2-adapt") as page:
        state = gr.State(None)
        gr.Markdown(_describe(predictor))
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(
                    label="Image (NIfTI, DICOM slice files, PNG/JPEG, GeoTIFF)", file_count="multiple", elem_id="upload"
                )
                mode = gr.Radio(list(MODES), value="box", label="Click adds", elem_id="mode")
                prompt = gr.Textbox(
                    label="Prompt (adapt.predict's syntax: clicks fill it, or type it)", elem_id="prompt"
                )
                with gr.Row():
                    segment = gr.Button("Segment", variant="primary", elem_id="segment")
                    clear = gr.Button("Clear", elem_id="clear")
                    save = gr.Button("Save mask", elem_id="save")
                status = gr.Textbox(label="Status", interactive=False, elem_id="status")
                saved_path = gr.Textbox(label="Saved mask", interactive=False, elem_id="saved_path")
                saved_file = gr.File(label="Download", interactive=False, elem_id="saved_file")
            with gr.Column(scale=2):
                view = gr.Image(
                    label="Slice", type="numpy", format="png", interactive=False, elem_id="view", height=560
                )
                index = gr.Slider(minimum=0, maximum=1, step=1, value=0, label="Slice", elem_id="slice")
        upload.upload(_guarded(opened, 5), [upload, state], [state, view, index, prompt, status])
        # the user's scrolling only: each update of the slider by a handler comes with its own render (``.change``
        # rendered the same slice a second time after every open and segment)
        index.input(scrolled, [index, state], view, trigger_mode="always_last")
        view.select(_guarded(clicked, 4), [mode, index, state], [state, view, prompt, status])
        segment.click(_guarded(segmented, 4), [prompt, state], [state, view, index, status])
        clear.click(_guarded(cleared, 4), [state], [state, view, prompt, status])
        save.click(_guarded(saved, 3), [state], [saved_file, saved_path, status])
        if worklist is not None:
            shared = Shared(state, view, index, prompt, status)
            loop_panel(page, predictor, Path(worklist), source or str(predictor.loaded.path), session_of, shared)
    return page


class Shared(NamedTuple):
    """The page's components the annotation loop updates too."""

    state: Any
    view: Any
    index: Any
    prompt: Any
    status: Any


def loop_panel(
    page: Any,
    predictor: Predictor,
    worklist: Path,
    source: str,
    session_of: Callable[[Session | None], Session],
    shared: Shared,
) -> None:
    """The annotation loop's part of the page (inside its ``gr.Blocks``): the worklist, stepping through its
    cases, accepting or saving a label, and the retrain. Elem ids: ``worklist``, ``previous``, ``next``,
    ``accept``, ``save_label``, ``retrain``, ``retrain_command``."""
    state, status = shared.state, shared.status
    running: dict[str, Any] = {}  # the retrain this page started (one at a time)

    def shown(by: int, session: Session | None, loop: Loop | None) -> tuple:
        session, loop = session_of(session), loop or Loop.open(worklist)
        loop.step(by)
        text = loop.show(session)
        return session, loop, session.render(), _slider(session), "", loop.table(), text

    def first_case(session: Session | None, loop: Loop | None) -> tuple:
        return shown(0, session, loop)

    def previous_case(session: Session | None, loop: Loop | None) -> tuple:
        return shown(-1, session, loop)

    def next_case(session: Session | None, loop: Loop | None) -> tuple:
        return shown(1, session, loop)

    def accepted(loop: Loop | None) -> tuple:
        loop = loop or Loop.open(worklist)
        label = loop.accept()
        return loop, loop.table(), loop.status(label)

    def saved_label(session: Session | None, loop: Loop | None) -> tuple:
        loop = loop or Loop.open(worklist)
        label = loop.save_corrected(session_of(session))
        return loop, loop.table(), loop.status(label)

    def retrained(loop: Loop | None) -> tuple:
        loop = loop or Loop.open(worklist)
        earlier = running.get("process")
        if earlier is not None and earlier.poll() is None:
            raise AdaptError(f"a retrain is running (pid {earlier.pid}); its log is {running['log']}")
        loaded = predictor.loaded
        argv = retrain.command(source, loaded.path, loaded.metadata, loop.record)
        running["process"], running["log"] = retrain.start(argv, loop.out)
        return (
            retrain.shown(argv),
            f"retrain started (pid {running['process'].pid}), its log: {running['log']}; when it ends, open the "
            "app on its run (adapter=outputs/<name>/<run>)",
        )

    loop = gr.State(None)
    with gr.Row():
        previous = gr.Button("Previous case", elem_id="previous")
        following = gr.Button("Next case", elem_id="next")
        accept = gr.Button("Accept pre-annotation", variant="primary", elem_id="accept")
        save_label = gr.Button("Save label", elem_id="save_label")
        retrain_button = gr.Button("Retrain", elem_id="retrain")
    table = gr.Dataframe(
        headers=[*COLUMNS, "state"], interactive=False, label=f"Worklist: {worklist}", elem_id="worklist"
    )
    command = gr.Textbox(
        label="Retrain command (copy it to run it elsewhere)", interactive=False, elem_id="retrain_command"
    )
    outputs = [state, loop, shared.view, shared.index, shared.prompt, table, status]
    previous.click(_guarded(previous_case, len(outputs)), [state, loop], outputs)
    following.click(_guarded(next_case, len(outputs)), [state, loop], outputs)
    accept.click(_guarded(accepted, 3), [loop], [loop, table, status])
    save_label.click(_guarded(saved_label, 3), [state, loop], [loop, table, status])
    retrain_button.click(_guarded(retrained, 2), [loop], [command, status])
    page.load(_guarded(first_case, len(outputs)), [state, loop], outputs)
