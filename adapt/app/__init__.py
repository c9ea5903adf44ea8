"""``python -m adapt.app``: a web page (Gradio) to segment a scan with an adapter by drawing prompts.

``session`` holds one user's scan, prompt and mask and runs them through ``adapt.predict``'s own
reader, prompt parser, runner and writer; ``page`` lays out the Gradio page; ``space`` writes the
``app.py`` that ``python -m adapt.hub push space_app=true`` adds to a repo. Needs the ``app``
extra (``pip install -e ".[app]"``).
"""
