"""Model families. Only Hugging Face text classification for now (``hf_text``)."""
