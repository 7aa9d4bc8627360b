"""(Re)build the IFEval parity fixtures in tests/fixtures/ifeval/ from the reference checker.

    python scripts/ifeval_fixtures.py [MODEL_RESPONSES.jsonl]

Five response sets, each scored by the reference (scripts/ifeval_reference.py):
  prompts  every prompt answered by itself           -> prompts.verdicts.jsonl  (key, verdicts)
  model    the embedded model's answers              -> model.jsonl (key, response, verdicts)
           (MODEL_RESPONSES: `spar-host eval ifeval --out DIR` writes DIR/responses.jsonl)
  counts, format, loose  scripts/ifeval_boundary.py  -> <set>.verdicts.jsonl (id, verdicts)
IFEval's own prompts are not stored: the test reads them from the installed package and
regenerates the boundary sets with the same script.
"""

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "ifeval")


def data_path():
    import importlib.util

    spec = importlib.util.find_spec("eval_framework")
    return os.path.join(list(spec.submodule_search_locations)[0], "tasks", "ifeval", "data",
                        "input_data.jsonl")


def reference(src, dst):
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "ifeval_reference.py"), src, dst],
                   check=True)
    return [json.loads(line) for line in open(dst, encoding="utf-8")]


def write(name, rows):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{name}: {len(rows)} rows", file=sys.stderr)


def main():
    os.makedirs(OUT, exist_ok=True)
    data = data_path()
    rows = [json.loads(line) for line in open(data, encoding="utf-8") if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "prompts.jsonl")
        with open(src, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(dict(r, response=r["prompt"])) + "\n")
        ver = reference(src, os.path.join(tmp, "prompts.ref.jsonl"))
        write("prompts.verdicts.jsonl",
              [{"key": v["key"], "strict": v["strict"], "loose": v["loose"]} for v in ver])

        if len(sys.argv) > 1:
            model = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
            ver = reference(sys.argv[1], os.path.join(tmp, "model.ref.jsonl"))
            write("model.jsonl", [{"key": m["key"], "response": m["response"], "strict": v["strict"],
                                   "loose": v["loose"]} for m, v in zip(model, ver)])

        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "ifeval_boundary.py"), data, tmp],
                       check=True)
        for name in ("counts", "format", "loose"):
            ver = reference(os.path.join(tmp, f"{name}.jsonl"), os.path.join(tmp, f"{name}.ref.jsonl"))
            ids = [json.loads(line)["id"] for line in open(os.path.join(tmp, f"{name}.jsonl"), encoding="utf-8")]
            write(f"{name}.verdicts.jsonl",
                  [{"id": i, "strict": v["strict"], "loose": v["loose"]} for i, v in zip(ids, ver)])


if __name__ == "__main__":
    main()
