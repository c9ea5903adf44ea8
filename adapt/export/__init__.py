"""Deployment exports of an adapter: ONNX graphs (optionally int8) or a plain transformers folder.

``python -m adapt.export adapter=<run|adapter dir|Hub id> format=onnx|safetensors [quantize=int8] out=DIR``
(``__main__``) calls ``build.export_adapter``, which traces the runner's graphs
(``adapt.inference.graphs``: an image encoder and prompt decoders), makes their weights int8
(``quantize``) and writes ``export.json`` (``adapt.inference.record``: the preprocessing a
runtime must repeat). Graphs and record live beside the runner because ``backend=onnx``
(``adapt.inference.onnx_backend``) reads them with the torch runner's reader, prompt mapping
and upsampling.
"""
