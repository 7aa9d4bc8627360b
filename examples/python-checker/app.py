"""A spar checker plugin written in Python, built into a WebAssembly component by componentize-py.

It implements the `spar:constraints/checker@0.1.0` world, the same contract as the Rust
checkers under plugins/, so `spar-host plugin check` and `spar-host score --plugin` take it as is.
"""

import json
import random

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.checks import Instance, InstructionSpec, Verdict
from wit_world.imports.types import Error_InvalidInput, Error_UnknownId, PluginInfo

RELATIONS = ("exactly", "at least", "less than")


def holds(relation, n, target):
    if relation == "exactly":
        return n == target
    if relation == "at least":
        return n >= target
    if relation == "less than":
        return n < target
    raise Err(Error_InvalidInput(f"relation `{relation}` is not one of {', '.join(RELATIONS)}"))


def word_count(kw, response):
    count = kw.get("count")
    if not isinstance(count, int) or count < 0:
        raise Err(Error_InvalidInput("`count` must be a non-negative integer"))
    return holds(kw.get("relation", "exactly"), len(response.split()), count)


def no_commas(kw, response):
    return "," not in response


def all_lowercase(kw, response):
    return response == response.lower()


def starts_with(kw, response):
    word = kw.get("word")
    if not isinstance(word, str) or not word:
        raise Err(Error_InvalidInput("`word` must be a non-empty string"))
    return response.lstrip().lower().startswith(word.lower())


# id -> (description, kwargs schema, check, instance maker)
SPECS = {
    "py:word_count": (
        "The response has a given number of words",
        {"type": "object", "properties": {"count": {"type": "integer"}, "relation": {"enum": list(RELATIONS)}},
         "required": ["count"]},
        word_count,
        lambda rng: (lambda rel, n: (f"Answer in {rel} {n} words.", {"count": n, "relation": rel}))(
            rng.choice(RELATIONS[1:]), rng.randrange(20, 200, 10)),
    ),
    "py:no_commas": (
        "The response uses no commas",
        {"type": "object", "properties": {}},
        no_commas,
        lambda rng: ("Do not use any commas in your response.", {}),
    ),
    "py:all_lowercase": (
        "The response has no capital letters",
        {"type": "object", "properties": {}},
        all_lowercase,
        lambda rng: ("Write your entire response in lowercase letters.", {}),
    ),
    "py:starts_with": (
        "The response starts with a given word",
        {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
        starts_with,
        lambda rng: (lambda w: (f'Start your response with the word "{w}".', {"word": w}))(
            rng.choice(["Indeed", "Today", "Imagine", "Yes"])),
    ),
}


def variants(response):
    """IFEval's loose variants: as is, without first/last/both lines, each also without `*`."""
    lines = response.split("\n")
    base = [response, "\n".join(lines[1:]), "\n".join(lines[:-1]), "\n".join(lines[1:-1])]
    return base + [v.replace("*", "") for v in base]


def spec(id):
    if id not in SPECS:
        raise Err(Error_UnknownId(f"`{id}` is not an instruction of python-checker"))
    return SPECS[id]


class Checks(exports.Checks):
    def info(self):
        return PluginInfo(name="python-checker", version="0.1.0",
                          description="Example checker written in Python (componentize-py)")

    def list(self):
        return [InstructionSpec(id=k, description=d, kwargs_schema=json.dumps(s))
                for k, (d, s, _, _) in SPECS.items()]

    def check(self, id, kwargs_json, prompt, response):
        _, _, fn, _ = spec(id)
        try:
            kw = json.loads(kwargs_json)
        except ValueError as e:
            raise Err(Error_InvalidInput(f"kwargs are not JSON: {e}"))
        if not isinstance(kw, dict):
            raise Err(Error_InvalidInput("kwargs must be a JSON object"))
        strict = bool(fn(kw, response))
        loose = strict or any(v.strip() and fn(kw, v) for v in variants(response)[1:])
        return Verdict(strict=strict, loose=loose)

    def instantiate(self, id, seed):
        _, _, _, make = spec(id)
        text, kw = make(random.Random(seed))
        return Instance(id=id, text=text, kwargs_json=json.dumps(kw))
