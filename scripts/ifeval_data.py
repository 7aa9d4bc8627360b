"""Extract the tables the IFEval checker plugin needs from the installed PyPI packages.

The reference evaluator detects languages with `langdetect` and splits sentences with nltk's
Punkt (English parameters shipped in `llama-index-core`). The plugin reimplements both
algorithms; this script hands it their data, in the exact order the reference uses:

    OUT/langdetect.bin   profiles: languages in the factory's order with their n-gram totals,
                         n-grams sorted by UTF-8 bytes, each with its (language index,
                         frequency) entries
    OUT/langdetect.json  small normalization tables (Latin-1 exclusions, CJK classes,
                         Vietnamese diacritics)
    OUT/punkt/*          English Punkt parameters (abbreviations, collocations, sentence
                         starters, orthographic contexts)

Nothing here is committed: scripts/build-plugins.sh runs it into plugins/target/ifeval-data.
Usage: python scripts/ifeval_data.py OUT_DIR
"""

import json
import os
import shutil
import struct
import sys


def punkt_dir():
    import importlib.util

    # Located without importing llama_index (installed without its dependencies).
    spec = importlib.util.find_spec("llama_index")
    base = list(spec.submodule_search_locations)[0] if spec else ""
    d = os.path.join(base, "core", "_static", "nltk_cache", "tokenizers", "punkt_tab", "english")
    if not os.path.isdir(d):
        sys.exit(f"ifeval_data: no Punkt parameters at {d}")
    return d


def main():
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "punkt"), exist_ok=True)

    from langdetect import detector_factory
    from langdetect.utils.ngram import NGram

    detector_factory.init_factory()
    fac = detector_factory._factory
    langs = list(fac.langlist)
    keys = sorted(fac.word_lang_prob_map, key=lambda k: k.encode("utf-8"))

    # Probabilities are stored as the profile's integer frequencies with the per-language
    # n-gram totals: the plugin divides as the factory does (float(freq) / n_words).
    n_words = {}
    freqs = {}
    for lang in langs:
        prof = json.load(open(os.path.join(os.path.dirname(detector_factory.__file__),
                                           "profiles", lang), encoding="utf-8"))
        n_words[lang] = prof["n_words"]
        freqs[lang] = prof["freq"]
    blob = bytearray(b"LDP2")
    blob += struct.pack("<I", len(langs))
    for lang in langs:
        b = lang.encode()
        blob += struct.pack("<B", len(b)) + b
        blob += struct.pack("<3Q", *n_words[lang])
    blob += struct.pack("<I", len(keys))
    key_bytes = bytearray()
    key_offsets = [0]
    entries = bytearray()
    entry_offsets = [0]
    for k in keys:
        key_bytes += k.encode("utf-8")
        key_offsets.append(len(key_bytes))
        n = 0
        for i, p in enumerate(fac.word_lang_prob_map[k]):
            if p != 0.0:
                lang = langs[i]
                f = freqs[lang][k]
                assert 1.0 * f / n_words[lang][len(k) - 1] == p, (lang, k)
                entries += struct.pack("<BI", i, f)
                n += 1
        entry_offsets.append(entry_offsets[-1] + n)
    blob += struct.pack(f"<{len(key_offsets)}I", *key_offsets)
    blob += struct.pack(f"<{len(entry_offsets)}I", *entry_offsets)
    blob += struct.pack("<I", len(key_bytes)) + key_bytes
    blob += entries
    tmp = os.path.join(out, "langdetect.bin.tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, os.path.join(out, "langdetect.bin"))

    tables = {
        "latin1_excluded": NGram.LATIN1_EXCLUDED,
        "cjk_map": {k: v for k, v in NGram.CJK_MAP.items() if k != v},
        "vi_chars": NGram.TO_NORMALIZE_VI_CHARS,
        "vi_marks": NGram.DMARK_CLASS,
        "vi_normalized": list(NGram.NORMALIZED_VI_CHARS),
    }
    with open(os.path.join(out, "langdetect.json"), "w", encoding="utf-8") as f:
        json.dump(tables, f, ensure_ascii=False)

    src = punkt_dir()
    for name in ("abbrev_types.txt", "collocations.tab", "sent_starters.txt", "ortho_context.tab"):
        shutil.copyfile(os.path.join(src, name), os.path.join(out, "punkt", name))
    print(f"ifeval_data: {len(langs)} languages, {len(keys)} n-grams -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
