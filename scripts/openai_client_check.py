"""The official `openai` Python client against an OpenAI-compatible server (`spar-host serve`).

Usage: python scripts/openai_client_check.py BASE_URL PROMPT

Asserts what a client relies on — listing models, chat and text completions, streaming that
adds up to the same text, `n` choices reproducible by `seed`, stop strings, OpenAI-shaped
errors for bad requests, and many concurrent clients — and prints one JSON line with the greedy
chat reply to PROMPT (the Rust test compares it with `spar-host generate`).
"""

import json
import sys
import threading
import urllib.request

import openai


def main() -> None:
    base, prompt = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=300)

    models = client.models.list().data
    assert len(models) == 1, models
    model = models[0].id
    messages = [{"role": "user", "content": prompt}]

    # Greedy chat, then the same request streamed: the deltas add up to the same text.
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0)
    greedy = r.choices[0].message.content
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant", r
    assert r.choices[0].finish_reason in ("stop", "length"), r
    assert greedy, r
    assert r.usage.completion_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage
    chunks = list(
        client.chat.completions.create(
            model=model, messages=messages, max_tokens=24, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == greedy, (streamed, greedy)
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [r.choices[0].finish_reason], finals
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens, chunks[-1]
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1, "streamed in pieces"

    # A stop string cuts the text at its first occurrence, and is not part of it.
    words = greedy.split()
    if len(words) >= 3:
        stop = words[2]
        s = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0, stop=[stop])
        assert s.choices[0].finish_reason == "stop", s
        assert s.choices[0].message.content == greedy[: greedy.find(stop)], (s, greedy)

    # n samples, reproducible with a seed.
    kw = dict(model=model, messages=messages, max_tokens=12, temperature=1.0, n=3, seed=11)
    a = [c.message.content for c in client.chat.completions.create(**kw).choices]
    b = [c.message.content for c in client.chat.completions.create(**kw).choices]
    assert len(a) == 3 and a == b, (a, b)
    streamed_n = {}
    for c in client.chat.completions.create(**kw, stream=True):
        for ch in c.choices:
            streamed_n[ch.index] = streamed_n.get(ch.index, "") + (ch.delta.content or "")
    assert [streamed_n[i] for i in range(3)] == a, (streamed_n, a)

    # Text completions, plain and streamed.
    t = client.completions.create(model=model, prompt="The capital of France is", max_tokens=10, temperature=0)
    assert t.object == "text_completion" and t.choices[0].text, t
    ts = "".join(c.choices[0].text for c in client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=10, temperature=0, stream=True) if c.choices)
    assert ts == t.choices[0].text, (ts, t.choices[0].text)
    two = client.completions.create(model=model, prompt=["One, two,", "Red, green,"], max_tokens=4, temperature=0)
    assert [c.index for c in two.choices] == [0, 1], two

    # Bad requests: OpenAI-shaped 4xx errors.
    for bad, status in (
        (dict(model=model, messages=messages, temperature=5), 400),
        (dict(model=model, messages=[]), 400),
        (dict(model=model, messages=[{"role": "wizard", "content": "x"}]), 400),
        (dict(model=model, messages=messages, max_tokens=10**7), 400),
        (dict(model=model, messages=messages, logprobs=True), 400),
        (dict(model="no-such-model", messages=messages), 404),
    ):
        try:
            client.chat.completions.create(**bad)
        except openai.APIStatusError as e:
            assert e.status_code == status, (bad, e)
            assert e.body and e.body.get("message"), e.body
        else:
            raise AssertionError(f"accepted: {bad}")

    # Many clients at once: all answered, and the engine batched them.
    stats_url = base.rstrip("/").removesuffix("/v1") + "/stats"
    before = json.load(urllib.request.urlopen(stats_url))
    results, errors = [None] * 8, []

    def ask(i: int) -> None:
        try:
            c = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=300)
            results[i] = c.chat.completions.create(
                model=model, messages=[{"role": "user", "content": f"Count to {i + 3}."}],
                max_tokens=16, temperature=0, extra_body={"ignore_eos": True}).choices[0].message.content
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert all(results), results
    after = json.load(urllib.request.urlopen(stats_url))
    steps = after["decode_steps"] - before["decode_steps"]
    rows = after["row_steps"] - before["row_steps"]
    assert steps > 0 and rows / steps > 1.5, ("concurrent requests were not batched", before, after)

    print(json.dumps({"greedy": greedy, "mean_batch_concurrent": rows / steps}))


if __name__ == "__main__":
    main()
