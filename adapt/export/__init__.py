"""Deployment exports of an adapter: ONNX graphs (optionally int8) or a plain transformers folder.

``python -m adapt.export adapter=<run|adapter dir|Hub id> format=onnx|safetensors [quantize=int8] out=DIR``
(``__main__``) calls ``build.export_adapter``; ``graphs`` traces SAM2 into an image-encoder and
prompt-decoder graphs, ``quantize`` makes their weights int8, ``record`` writes ``export.json``
(the preprocessing a runtime must repeat). ``adapt.inference.onnx_backend`` runs an export
with the torch runner's reader, prompt mapping and upsampling (``backend=onnx``).
"""
