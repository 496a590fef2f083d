"""Runs llama.cpp's convert_hf_to_gguf.py (path in argv[1], its arguments after) adding metadata it does not write.

A plain script, run by `compressor.export.convert` in a subprocess with the converter's own gguf-py first on
PYTHONPATH: it imports nothing from compressor. $COMPRESSOR_GGUF_EXTRA_KV holds a JSON object of keys relative to
the file's architecture ("attention.sliding_window_pattern" becomes "gemma3.attention.sliding_window_pattern")
and their values; each is added to the text model's file before its header is written. Nothing else changes.
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
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
