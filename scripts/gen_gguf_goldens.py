#!/usr/bin/env python3
"""Generates the GGUF golden files under tests/golden/gguf/ with the `gguf` PyPI package
(gguf-py, pinned in scripts/requirements.txt), an implementation independent of gsa:

  quants.json + <type>.bin  random data quantized by gguf-py (or random block bytes for the
                            formats gguf-py only dequantizes), followed by gguf-py's f32 values
                            (and, for quantized data, the source floats)
  smollm2_index.json        metadata and tensor index of the default model, read by gguf-py
  smollm2_slices.json + .bin  the raw bytes and gguf-py dequantization of a few rows of real
                            tensors of the default model
and the seed corpus of the GGUF fuzz target, tests/fuzz/corpus/gguf/: tiny files written by
gguf-py's GGUFWriter (the reader's unit tests also check that they parse).

Each .bin holds the raw quantized bytes followed by n little-endian f32 values.
Usage: pip install gguf==0.19.0 numpy; scripts/gen_gguf_goldens.py [--model PATH] [--out DIR]
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as T
    from gguf import quants
except ImportError:
    sys.exit("gen_gguf_goldens.py needs the gguf package: pip install gguf==0.19.0 numpy")

SEED = 20241128
N_ELEMS = 1024  # 32 legacy blocks or 4 K-quant super-blocks per case

# Formats gguf-py can quantize: random floats -> quantize -> dequantize.
QUANTIZED = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.BF16]
# Formats gguf-py only dequantizes: random block bytes with sane f16 scale fields.
# Value: byte offsets of the f16 scale fields inside one block.
RANDOM_BLOCKS = {
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
    T.IQ4_NL: [0],
    T.IQ4_XS: [0],
}


def test_floats(rng: np.random.Generator, n: int) -> np.ndarray:
    """Gaussian data with some structure: an all-zero block, a constant block, outliers."""
    x = rng.standard_normal(n).astype(np.float32) * np.float32(0.05)
    x[32:64] = 0.0
    x[64:96] = 0.25
    x[96:128] *= 40.0
    x[rng.integers(0, n, 8)] = rng.choice([-3.0, 3.0], 8)
    return x


def random_blocks(rng: np.random.Generator, qtype: T, n: int, scale_offsets) -> np.ndarray:
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = n // block_elems
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for off in scale_offsets:
        # Scales in [-0.03, 0.03] as f16: finite, never NaN, some negative as in real files.
        d = (rng.uniform(-0.03, 0.03, size=n_blocks)).astype(np.float16)
        raw[:, off:off + 2] = d.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)


def write_case(out: Path, name: str, raw: np.ndarray, values: np.ndarray,
               source: np.ndarray | None = None) -> None:
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    values = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    tail = b"" if source is None else np.ascontiguousarray(source, dtype="<f4").tobytes()
    (out / f"{name}.bin").write_bytes(raw.tobytes() + values.tobytes() + tail)


def gen_quants(out: Path) -> None:
    rng = np.random.default_rng(SEED)
    cases = []

    def add(qtype: T, name: str, raw: np.ndarray, n: int, note: str,
            source: np.ndarray | None = None) -> None:
        values = quants.dequantize(raw.reshape(1, -1), qtype).reshape(-1)
        assert values.size == n, (name, values.size)
        write_case(out, name, raw, values, source)
        cases.append({"name": name, "type": name.split("-")[0], "type_id": int(qtype), "n": n,
                      "n_bytes": int(raw.size), "file": f"{name}.bin", "source": note,
                      "has_source": source is not None})

    # F16: ordinary values plus subnormals, signed zero and infinities.
    x = test_floats(rng, N_ELEMS)
    x[0:6] = [6.0e-8, -6.0e-8, -0.0, np.inf, -np.inf, 65504.0]
    add(T.F16, "f16", x.astype(np.float16).view(np.uint8), N_ELEMS, "numpy float16", x)
    for qtype in QUANTIZED:
        x = test_floats(rng, N_ELEMS)
        raw = quants.quantize(x.reshape(1, -1), qtype).reshape(-1)
        add(qtype, qtype.name.lower(), raw, N_ELEMS, "gguf-py quantize", x)
    for qtype, offsets in RANDOM_BLOCKS.items():
        raw = random_blocks(rng, qtype, N_ELEMS, offsets)
        name = qtype.name.lower().replace("_k", "_K")
        add(qtype, name, raw, N_ELEMS, "random block bytes")
    # A second set of legacy blocks from random bytes, to reach every bit pattern of the quants.
    for qtype, offsets in {T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2],
                           T.Q8_0: [0]}.items():
        raw = random_blocks(rng, qtype, N_ELEMS, offsets)
        add(qtype, qtype.name.lower() + "-random", raw, N_ELEMS, "random block bytes")

    manifest = {"generator": "scripts/gen_gguf_goldens.py", "gguf_py": "0.19.0", "seed": SEED,
                "layout": "raw block bytes, n little-endian f32 values, then (has_source) the n f32 "
                          "values that were quantized", "cases": cases}
    (out / "quants.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(cases)} quantization cases to {out}")


def value_summary(field) -> dict:
    """One metadata entry, as gguf-py reads it: type, and the value (arrays: length and head)."""
    vt = field.types[0]
    entry = {"type": vt.name.lower()}
    if vt == gguf.GGUFValueType.ARRAY:
        sub = field.types[-1]
        entry["elem_type"] = sub.name.lower()
        entry["length"] = len(field.data)
        head = [field.contents(i) for i in range(min(4, len(field.data)))]
        entry["head"] = [v if not isinstance(v, float) else float(v) for v in head]
    else:
        v = field.contents()
        if vt == gguf.GGUFValueType.STRING:
            entry["length"] = len(v.encode("utf-8"))
            if len(v) <= 200:
                entry["value"] = v
        elif vt in (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64):
            entry["value"] = float(v)
        elif vt == gguf.GGUFValueType.BOOL:
            entry["value"] = bool(v)
        else:
            entry["value"] = int(v)
    return entry


def gen_model(out: Path, model: Path) -> None:
    r = gguf.GGUFReader(str(model))
    metadata = []
    for name, field in r.fields.items():
        if name.startswith("GGUF."):  # gguf-py's pseudo-fields for the header
            continue
        metadata.append({"key": name, **value_summary(field)})
    tensors = [{"name": t.name, "shape": [int(d) for d in t.shape], "type": t.tensor_type.name.lower(),
                "type_id": int(t.tensor_type), "n_bytes": int(t.n_bytes),
                "file_offset": int(t.data_offset)} for t in r.tensors]
    index = {"generator": "scripts/gen_gguf_goldens.py", "gguf_py": "0.19.0", "model": model.name,
             "file_size": model.stat().st_size, "alignment": int(r.alignment),
             "data_offset": int(r.data_offset), "n_tensors": len(r.tensors),
             "metadata": metadata, "tensors": tensors}
    # One line per metadata entry and per tensor keeps the file small and diffable.
    text = json.dumps({k: v for k, v in index.items() if k not in ("metadata", "tensors")}, indent=1)
    lines = ",\n".join("  " + json.dumps(m) for m in metadata)
    tlines = ",\n".join("  " + json.dumps(t) for t in tensors)
    text = text[:-2] + f',\n "metadata": [\n{lines}\n ],\n "tensors": [\n{tlines}\n ]\n}}\n'
    json.loads(text)
    (out / "smollm2_index.json").write_text(text)

    by_name = {t.name: t for t in r.tensors}
    slices = []
    for tname, rows in [("blk.0.attn_q.weight", [0, 1]), ("token_embd.weight", [0, 1, 1000]),
                        ("blk.29.ffn_down.weight", [7]), ("output_norm.weight", [0])]:
        t = by_name[tname]
        data = np.asarray(t.data)
        data = data.reshape(-1, data.shape[-1]) if data.ndim > 1 else data.reshape(1, -1)
        for row in rows:
            raw = np.ascontiguousarray(data[row]).view(np.uint8).reshape(-1)
            values = quants.dequantize(raw.reshape(1, -1), t.tensor_type).reshape(-1)
            fname = f"smollm2_{tname.replace('.', '_')}_row{row}"
            write_case(out, fname, raw, values)
            slices.append({"tensor": tname, "type": t.tensor_type.name.lower(),
                           "type_id": int(t.tensor_type), "row": row, "row_elems": int(t.shape[0]),
                           "n_bytes": int(raw.size), "file": f"{fname}.bin"})
    (out / "smollm2_slices.json").write_text(json.dumps(
        {"generator": "scripts/gen_gguf_goldens.py", "model": model.name,
         "layout": "raw row bytes, then row_elems little-endian f32 values", "slices": slices},
        indent=1) + "\n")
    print(f"wrote the index of {len(tensors)} tensors and {len(slices)} row slices of {model.name}")


def write_gguf(path: Path, fill, alignment: int | None = None) -> None:
    w = gguf.GGUFWriter(str(path), arch="llama")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    fill(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gen_corpus(corpus: Path) -> None:
    """Tiny valid files: every metadata type and nested arrays; tensors of several types."""
    rng = np.random.default_rng(SEED + 1)

    def metadata(w) -> None:
        w.add_uint8("t.u8", 200)
        w.add_int8("t.i8", -5)
        w.add_uint16("t.u16", 60000)
        w.add_int16("t.i16", -30000)
        w.add_uint32("llama.block_count", 2)
        w.add_int32("t.i32", -7)
        w.add_uint64("t.u64", 1 << 40)
        w.add_int64("t.i64", -(1 << 40))
        w.add_float32("llama.rope.freq_base", 10000.0)
        w.add_float64("t.f64", 0.5)
        w.add_bool("tokenizer.ggml.add_bos_token", True)
        w.add_string("tokenizer.ggml.model", "gpt2")
        w.add_array("tokenizer.ggml.tokens", ["a", "b", "ab", "<s>"])
        w.add_array("tokenizer.ggml.token_type", [1, 1, 1, 3])
        w.add_array("tokenizer.ggml.merges", ["a b"])
        w.add_array("t.nested", [[1, 2], [3]])

    def tensors(w) -> None:
        w.add_uint32("llama.embedding_length", 32)
        w.add_tensor("norm.weight", rng.standard_normal(32).astype(np.float32))
        w.add_tensor("half", rng.standard_normal((2, 8)).astype(np.float16))
        for qtype in (T.Q8_0, T.Q4_1):
            x = rng.standard_normal((2, 32)).astype(np.float32)
            w.add_tensor(f"w.{qtype.name.lower()}", quants.quantize(x, qtype), raw_dtype=qtype)
        raw = random_blocks(rng, T.Q4_K, 256, [0, 2]).reshape(1, -1)
        w.add_tensor("w.q4_k", raw, raw_dtype=T.Q4_K)

    corpus.mkdir(parents=True, exist_ok=True)
    write_gguf(corpus / "metadata.gguf", metadata)
    write_gguf(corpus / "tensors.gguf", tensors)
    write_gguf(corpus / "aligned64.gguf", tensors, alignment=64)
    print(f"wrote 3 seed files to {corpus}")


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    default_model = Path(os.environ.get("GSA_MODEL_DIR", Path.home() / ".cache/gsa/models")) / \
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=default_model)
    ap.add_argument("--out", type=Path, default=root / "tests/golden/gguf")
    ap.add_argument("--corpus", type=Path, default=root / "tests/fuzz/corpus/gguf")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gen_quants(args.out)
    gen_corpus(args.corpus)
    if args.model.exists():
        gen_model(args.out, args.model)
    else:
        print(f"model {args.model} not found: skipping the model goldens (run scripts/fetch-model)")


if __name__ == "__main__":
    main()
