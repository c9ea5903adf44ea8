"""From a user's file to masks in its format and geometry: the reader (``io``), the prompt
mini-language (``prompt_syntax``), the one model runner (``runner``), propagation through a
volume or video with SAM2's memory (``propagation``)."""
