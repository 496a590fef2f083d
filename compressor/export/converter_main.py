"""Runs llama.cpp's convert_hf_to_gguf.py (path in argv[1], its arguments after) adding metadata it does not write.

A plain script, run by `compressor.export.convert` in a subprocess with the converter's own gguf-py first on
PYTHONPATH: it imports nothing from compressor. $COMPRESSOR_GGUF_EXTRA_KV holds a JSON object of keys relative to
the file's architecture ("attention.sliding_window_pattern" becomes "gemma3.attention.sliding_window_pattern")
and their values; each is added to the text model's file before its header is written. $COMPRESSOR_GGUF_RENAME
holds a JSON list of [old prefix, new prefix]: a checkpoint tensor name starting with the old prefix (and not
already with the new one) is read under the new one (transformers 5 saves Gemma 3's tower as `vision_tower.*`,
the converter maps `vision_tower.vision_model.*`). $COMPRESSOR_GGUF_BYTE_BPE: the tokenizer is a byte-level BPE
without merges (see `_byte_level_bpe`). Nothing else changes.
"""

import json
import os
import runpy
import sys


def main() -> None:
    script, args = sys.argv[1], sys.argv[2:]
    extra = json.loads(os.environ.get("COMPRESSOR_GGUF_EXTRA_KV") or "{}")
    if extra:
        import gguf

        original = gguf.GGUFWriter.write_header_to_file

        def write_header_to_file(self, *a, **kw):
            if self.arch != "clip":  # the text model's file, not an mmproj
                for key, value in extra.items():
                    full = f"{self.arch}.{key}"
                    if any(full in kv for kv in self.kv_data):
                        continue  # the converter wrote it: its value stands
                    if isinstance(value, list):
                        self.add_array(full, value)
                    else:
                        self.add_uint32(full, int(value))
            return original(self, *a, **kw)

        gguf.GGUFWriter.write_header_to_file = write_header_to_file
    if os.environ.get("COMPRESSOR_GGUF_BYTE_BPE"):
        _byte_level_bpe()
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(script))
    renames = json.loads(os.environ.get("COMPRESSOR_GGUF_RENAME") or "[]")
    if renames:
        from conversion import base

        original_filter = base.ModelBase.__dict__["filter_tensors"].__func__

        def filter_tensors(cls, item):
            name, gen = item
            for (
                old,
                new,
            ) in renames:  # checkpoint names as transformers saves them -> as the converter reads them
                if name.startswith(old) and not name.startswith(new):
                    name = new + name[len(old) :]
            return original_filter(cls, (name, gen))

        base.ModelBase.filter_tensors = classmethod(filter_tensors)
    runpy.run_path(script, run_name="__main__")


def _byte_level_bpe() -> None:
    """A byte-level BPE without merges that splits words with GPT-2's regex (compressor's tiny tokenizer): the
    converter recognises tokenizers by hashing their output, so it reads as llama.cpp's "gpt-2" pre-tokenizer
    (only when unrecognised); and llama.cpp's BPE loader requires merges, so the file gets one that never applies:
    "a 0", a letter and a digit, which GPT-2's regex never puts in one word."""
    import gguf

    sys.path.insert(0, os.path.dirname(sys.argv[1]))
    from conversion import base

    original_pre = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return original_pre(self, tokenizer)
        except NotImplementedError:  # not in its hash list
            return "gpt-2"

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    original_header = gguf.GGUFWriter.write_header_to_file

    def write_header_to_file(self, *a, **kw):
        fields = {k for kv in self.kv_data for k in kv}
        if self.arch != "clip" and "tokenizer.ggml.merges" not in fields:
            self.add_token_merges(["a 0"])
        return original_header(self, *a, **kw)

    gguf.GGUFWriter.write_header_to_file = write_header_to_file


if __name__ == "__main__":
    main()
