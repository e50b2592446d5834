#!/usr/bin/env python3
"""Writes a Hugging Face tokenizer directory (tokenizer.json, tokenizer_config.json) from
the tokenizer a GGUF file embeds (gpt2-style byte-level BPE, as SmolLM2's), with only the
standard library. tests/gpu/run.sh builds its random Llama-shaped model around it: the GPU
machine has no network and only 64 MiB travel per call, so the tokenizer is made here
from the bundled model and committed (tests/gpu/tokenizer/, provenance in its README).

    gguf_tokenizer.py MODEL.gguf OUT_DIR
"""
import json
import os
import struct
import sys

SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}


class Reader:
    def __init__(self, f):
        self.f = f

    def take(self, fmt):
        size = struct.calcsize(fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise SystemExit("gguf_tokenizer: truncated GGUF file")
        return struct.unpack(fmt, data)[0]

    def string(self):
        n = self.take("<Q")
        return self.f.read(n).decode("utf-8", errors="replace")

    def value(self, kind):
        if kind in SCALARS:
            return self.take(SCALARS[kind])
        if kind == 8:
            return self.string()
        if kind == 9:
            item, n = self.take("<I"), self.take("<Q")
            return [self.value(item) for _ in range(n)]
        raise SystemExit(f"gguf_tokenizer: unknown GGUF value type {kind}")


def metadata(path):
    with open(path, "rb") as f:
        r = Reader(f)
        if f.read(4) != b"GGUF":
            raise SystemExit(f"gguf_tokenizer: {path} is not a GGUF file")
        version = r.take("<I")
        if version < 2:
            raise SystemExit(f"gguf_tokenizer: GGUF version {version} is not supported")
        r.take("<Q")  # tensors
        kv = {}
        for _ in range(r.take("<Q")):
            key = r.string()
            kv[key] = r.value(r.take("<I"))
        return kv


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    kv = metadata(sys.argv[1])
    if kv.get("tokenizer.ggml.model") != "gpt2":
        raise SystemExit("gguf_tokenizer: only gpt2-style byte-level BPE tokenizers are handled")
    tokens = kv["tokenizer.ggml.tokens"]
    types = kv.get("tokenizer.ggml.token_type", [1] * len(tokens))
    merges = kv.get("tokenizer.ggml.merges", [])
    special = [i for i, t in enumerate(types) if t == 3]  # CONTROL
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": tokens[i], "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True}
            for i in special
        ],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": dict(byte_level, trim_offsets=False),
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None,
            "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": merges,
        },
    }
    name = lambda key: tokens[kv[key]] if key in kv else None  # noqa: E731
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": name("tokenizer.ggml.bos_token_id"),
        "eos_token": name("tokenizer.ggml.eos_token_id"),
        "pad_token": name("tokenizer.ggml.padding_token_id"),
        "unk_token": name("tokenizer.ggml.unknown_token_id"),
        "add_bos_token": bool(kv.get("tokenizer.ggml.add_bos_token", False)),
        "model_max_length": int(kv.get("llama.context_length", 8192)),
        "chat_template": kv.get("tokenizer.chat_template"),
    }
    os.makedirs(sys.argv[2], exist_ok=True)
    with open(os.path.join(sys.argv[2], "tokenizer.json"), "w") as f:
        json.dump(tokenizer, f, ensure_ascii=False)
    with open(os.path.join(sys.argv[2], "tokenizer_config.json"), "w") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
    print(f"{len(tokens)} tokens, {len(merges)} merges, {len(special)} special")


if __name__ == "__main__":
    main()
