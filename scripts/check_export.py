"""Read `spar-host export` output the way TRL reads datasets.

Usage: python scripts/check_export.py TRL_DIR LLAMAFACTORY_DIR MODEL_DIR

TRL: `dpo.jsonl` and `sft.jsonl` load with `datasets`, are conversational by TRL's own test, and
render through the model's chat template with `trl.data_utils.apply_chat_template` (what
DPOTrainer and SFTTrainer do). LLaMA-Factory: `dataset_info.json` names the files and columns,
and the ShareGPT rows are `from`/`value` conversations by TRL's test, which converts them back to
the same messages as the TRL export. Prints the row counts as JSON.
"""

import json
import os
import sys

from datasets import load_dataset
from transformers import AutoTokenizer
from trl.data_utils import apply_chat_template, is_conversational, is_conversational_from_value, maybe_convert_to_chatml


# LLaMA-Factory's ShareGPT tags (its defaults: human, gpt, system).
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def chatml(conversations: list) -> list:
    msgs = maybe_convert_to_chatml({"conversations": conversations})["messages"]
    return [{"role": ROLES[m["role"]], "content": m["content"]} for m in msgs]


def main() -> None:
    trl_dir, lf_dir, model = sys.argv[1:4]
    tok = AutoTokenizer.from_pretrained(model)
    dpo = load_dataset("json", data_files=os.path.join(trl_dir, "dpo.jsonl"), split="train")
    sft = load_dataset("json", data_files=os.path.join(trl_dir, "sft.jsonl"), split="train")
    for ex in dpo:
        assert is_conversational(ex), ex
        out = apply_chat_template(ex, tok)
        assert ex["chosen"][-1]["content"] in out["chosen"], (ex, out)
        assert ex["rejected"][-1]["content"] in out["rejected"], (ex, out)
        assert ex["prompt"][-1]["content"] in out["prompt"], (ex, out)
    for ex in sft:
        assert is_conversational(ex), ex
        out = apply_chat_template(ex, tok)
        assert ex["messages"][-1]["content"] in out["text"], (ex, out)

    info = json.load(open(os.path.join(lf_dir, "dataset_info.json")))
    lf = {}
    for name, entry in info.items():
        assert entry["formatting"] == "sharegpt", entry
        rows = json.load(open(os.path.join(lf_dir, entry["file_name"])))
        for r in rows:
            for col in entry["columns"].values():
                assert col in r, (name, col, r)
        lf[name] = rows
    assert info["spar_dpo"]["ranking"] is True
    assert len(lf["spar_dpo"]) == len(dpo) and len(lf["spar_rft"]) == len(sft)
    for row, ex in zip(lf["spar_dpo"], dpo):
        assert is_conversational_from_value({"conversations": row["conversations"]}), row
        back = chatml(row["conversations"] + [row["chosen"]])
        assert back == ex["prompt"] + ex["chosen"], (back, ex)
        assert row["rejected"]["value"] == ex["rejected"][-1]["content"]
    for row, ex in zip(lf["spar_rft"], sft):
        assert chatml(row["conversations"]) == ex["messages"], (row, ex)
    print(json.dumps({"dpo": len(dpo), "sft": len(sft)}))


if __name__ == "__main__":
    main()
