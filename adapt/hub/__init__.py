"""Sharing adapters: push/pull/merge on the Hugging Face Hub (``share``), loading an adapter onto
its recorded base (``loading``), and the generated model card (``model_card``)."""
