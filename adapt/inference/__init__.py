"""From a user's file to masks in its format and geometry: the reader (``io``, ``user_files``), the
prompt mini-language (``prompt_syntax``), the one model runner (``runner``) and its batched
driver (``engine``), propagation through a volume or video with SAM2's memory (``propagation``),
and the runner over an ONNX export (``onnx_backend``, with the export's ``graphs`` and ``record``)."""
