"""Every OpenAI parameter the Cocoon guest serves, through the official `openai` SDK.

Usage: openai_surface.py BASE_URL CERT_PEM MODEL MAX_PROMPT_TOKENS

The model is tiny and answers wrongly; every check here is about behaviour that holds
for any model: greedy decoding is repeatable, a seed repeats a sampled answer, top_p
near 0 is greedy, penalties change the distribution, stop sequences cut the text,
log probabilities are consistent with the tokens and the usage, constrained output is
valid JSON of the schema, and what the server cannot do is refused with a 400 that
names the parameter. Prints one JSON line; exits non-zero on the first failed check.
"""

import json
import math
import ssl
import sys

import openai


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def refused(call, param, code=None):
    """The call must fail with a 400 naming `param` (and `code`, when given)."""
    try:
        call()
    except openai.BadRequestError as e:
        check(e.param == param, f"400 names {e.param!r}, expected {param!r}: {e}")
        check(code is None or e.code == code, f"code {e.code!r}, expected {code!r}: {e}")
        return e.code
    raise AssertionError(f"accepted, expected a 400 on {param}")


def main():
    base_url, cert, model, max_prompt_tokens = sys.argv[1:5]
    max_prompt_tokens = int(max_prompt_tokens)
    ctx = ssl.create_default_context(cafile=cert)
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0,
                           http_client=openai.DefaultHttpxClient(verify=ctx, timeout=300))
    chat = client.chat.completions.create
    msgs = [{"role": "user", "content": "Write a short list of fruits."}]
    greedy = dict(model=model, messages=msgs, temperature=0)
    report = {}

    # /v1/models: list and retrieve.
    check([m.id for m in client.models.list().data] == [model], "models list")
    check(client.models.retrieve(model).id == model, "models retrieve")

    # max_tokens and max_completion_tokens bound the completion exactly.
    for key in ("max_tokens", "max_completion_tokens"):
        r = chat(**greedy, **{key: 5})
        check(r.usage.completion_tokens <= 5, f"{key}: {r.usage}")
        if r.choices[0].finish_reason == "length":
            check(r.usage.completion_tokens == 5, f"{key} length but {r.usage}")
    base = chat(**greedy, max_tokens=24, logprobs=True, top_logprobs=3)
    text = base.choices[0].message.content
    again = chat(**greedy, max_tokens=24)
    check(again.choices[0].message.content == text, "temperature 0 is repeatable")

    # logprobs / top_logprobs: one entry per completion token, natural logs, the greedy
    # token is the most likely one, alternatives sorted and k of them.
    content = base.choices[0].logprobs.content
    check(len(content) == base.usage.completion_tokens, f"{len(content)} logprobs vs {base.usage}")
    for entry in content:
        check(entry.logprob <= 0 and len(entry.top_logprobs) == 3, f"entry {entry}")
        lps = [t.logprob for t in entry.top_logprobs]
        check(lps == sorted(lps, reverse=True), f"top_logprobs unsorted {lps}")
        check(entry.top_logprobs[0].token == entry.token, f"greedy token not the top one: {entry}")
        check(abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-6, "top logprob")
        check(sum(math.exp(x) for x in lps) <= 1.0 + 1e-4, "probabilities above 1")
        check(bytes(entry.bytes) == entry.token.encode(), "bytes are the token's UTF-8")
    joined = "".join(e.token for e in content)
    check(text in joined, f"content {text!r} not spelled by its tokens {joined!r}")
    report["logprobs_tokens"] = len(content)

    # Usage is exact in both modes: same prompt and greedy tokens, same counts.
    chunks = list(chat(**greedy, max_tokens=24, stream=True, logprobs=True,
                       stream_options={"include_usage": True}))
    su = chunks[-1].usage
    check(su.prompt_tokens == base.usage.prompt_tokens, f"prompt {su} vs {base.usage}")
    check(su.completion_tokens == base.usage.completion_tokens, f"completion {su} vs {base.usage}")
    check(su.prompt_tokens_details.cached_tokens == 0 and
          base.usage.prompt_tokens_details.cached_tokens == 0, "cached tokens")
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(streamed == text, f"stream {streamed!r} != {text!r}")
    streamed_lp = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    check([e.token for e in streamed_lp] == [e.token for e in content], "streamed logprobs")

    # n: independent choices, indexed, each counted.
    r = chat(**greedy, max_tokens=6, n=3, logprobs=True)
    check(sorted(c.index for c in r.choices) == [0, 1, 2], f"indices {r.choices}")
    per_choice = sum(len(c.logprobs.content) for c in r.choices)
    check(per_choice == r.usage.completion_tokens, f"n=3: {per_choice} tokens vs {r.usage}")
    check(len({c.message.content for c in r.choices}) == 1, "greedy choices agree")
    s = list(chat(**greedy, max_tokens=6, n=2, stream=True, stream_options={"include_usage": True}))
    finished = sorted(c.choices[0].index for c in s if c.choices and c.choices[0].finish_reason)
    check(finished == [0, 1], f"streamed n=2 finishes {finished}")

    # seed: a sampled answer repeats with the same seed; seeds give different answers.
    sampled = dict(model=model, messages=msgs, temperature=1.0, max_tokens=16)
    a = chat(**sampled, seed=42).choices[0].message.content
    b = chat(**sampled, seed=42).choices[0].message.content
    check(a == b, f"seed 42 gave {a!r} then {b!r}")
    seeds = {chat(**sampled, seed=s).choices[0].message.content for s in (1, 2, 3)}
    check(len(seeds) > 1, f"three seeds, one answer: {seeds}")
    s1 = "".join(c.choices[0].delta.content or "" for c in chat(**sampled, seed=42, stream=True) if c.choices)
    check(s1 == a, "a seeded stream repeats the seeded answer")

    # top_p: a nucleus that keeps only the most likely token is greedy decoding.
    nucleus = chat(model=model, messages=msgs, temperature=1.0, top_p=1e-9, max_tokens=24, seed=5)
    check(nucleus.choices[0].message.content == text, "top_p ~0 equals greedy")

    # presence / frequency penalties change the distribution the first token is drawn
    # from (the prompt's tokens are penalised).
    for key in ("presence_penalty", "frequency_penalty"):
        p = chat(**greedy, max_tokens=1, logprobs=True, **{key: 2.0})
        lp = p.choices[0].logprobs.content[0]
        first = content[0]
        check(lp.logprob != first.logprob or lp.token != first.token, f"{key} changed nothing")

    # stop: the text ends right before the first stop sequence, in both modes.
    words = text.split()
    check(len(words) >= 3, f"too short a greedy text to cut: {text!r}")
    stop = " " + words[2]
    cut = text[: text.index(stop)]
    r = chat(**greedy, max_tokens=24, stop=[stop, "zzzz-never"])
    check(r.choices[0].message.content == cut and r.choices[0].finish_reason == "stop",
          f"stop {stop!r}: {r.choices[0].message.content!r} vs {cut!r}")
    s = list(chat(**greedy, max_tokens=24, stop=stop, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in s if c.choices)
    check(streamed == cut, f"streamed stop: {streamed!r} vs {cut!r}")
    report["stop"] = stop

    # response_format: json_object and json_schema give JSON of the requested shape.
    jo = chat(model=model, messages=[{"role": "user", "content": "Give a JSON object."}],
              temperature=0, max_tokens=48, response_format={"type": "json_object"})
    if jo.choices[0].finish_reason == "stop":
        check(isinstance(json.loads(jo.choices[0].message.content), dict), "json_object")
    schema = {"type": "object", "properties": {"fruit": {"enum": ["apple", "pear"]}},
              "required": ["fruit"], "additionalProperties": False}
    js = chat(model=model, messages=msgs, temperature=0, max_tokens=32,
              response_format={"type": "json_schema", "json_schema": {"name": "f", "schema": schema}})
    value = json.loads(js.choices[0].message.content)
    check(value in ({"fruit": "apple"}, {"fruit": "pear"}), f"json_schema gave {value}")
    report["json_schema"] = value

    # /v1/completions: prompts, n, echo, logprobs, stream with usage.
    comp = client.completions.create
    c = comp(model=model, prompt=["The sky is", "Apples are"], n=2, max_tokens=4,
             temperature=0, logprobs=2)
    check(sorted(ch.index for ch in c.choices) == [0, 1, 2, 3], "4 choices")
    check(c.choices[0].text == c.choices[1].text, "greedy choices of one prompt agree")
    toks = sum(len(ch.logprobs.tokens) for ch in c.choices)
    check(toks == c.usage.completion_tokens, f"{toks} vs {c.usage}")
    check(all(len(t) <= 2 for ch in c.choices for t in ch.logprobs.top_logprobs), "top 2")
    one = comp(model=model, prompt="The sky is", max_tokens=4, temperature=0)
    other = comp(model=model, prompt="Apples are", max_tokens=4, temperature=0)
    check(c.usage.prompt_tokens == one.usage.prompt_tokens + other.usage.prompt_tokens,
          "prompt tokens add up over prompts, counted once per prompt")
    e = comp(model=model, prompt="The sky is", max_tokens=4, temperature=0, echo=True)
    check(e.choices[0].text == "The sky is" + one.choices[0].text, f"echo {e.choices[0].text!r}")
    st = list(comp(model=model, prompt="The sky is", max_tokens=4, temperature=0, stream=True,
                   stream_options={"include_usage": True}))
    check("".join(x.choices[0].text for x in st if x.choices) == one.choices[0].text, "stream text")
    check(st[-1].usage.completion_tokens == one.usage.completion_tokens, "stream usage")

    # The prompt limit: OpenAI's context_length_exceeded.
    long = [{"role": "user", "content": "fruit " * (max_prompt_tokens + 10)}]
    report["context_length"] = refused(
        lambda: chat(model=model, messages=long, max_tokens=1), "messages", "context_length_exceeded")
    refused(lambda: comp(model=model, prompt="fruit " * (max_prompt_tokens + 10), max_tokens=1),
            "prompt", "context_length_exceeded")

    # What the engine cannot do is refused, naming the parameter.
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    report["tools"] = refused(lambda: chat(**greedy, tools=[tool]), "tools", "unsupported_parameter")
    refused(lambda: chat(**greedy, tool_choice="auto"), "tool_choice", "unsupported_parameter")
    refused(lambda: chat(**greedy, logit_bias={"1": 5}), "logit_bias", "unsupported_parameter")
    refused(lambda: chat(**greedy, top_logprobs=2), "top_logprobs", "invalid_value")
    refused(lambda: chat(**greedy, n=9), "n")
    refused(lambda: chat(**{**greedy, "temperature": 2.5}), "temperature")
    refused(lambda: chat(**greedy, top_p=0), "top_p")
    refused(lambda: chat(**greedy, presence_penalty=3), "presence_penalty")
    refused(lambda: chat(**greedy, frequency_penalty=-3), "frequency_penalty")
    refused(lambda: chat(**greedy, stop=["a", "b", "c", "d", "e"]), "stop")
    refused(lambda: chat(**greedy, seed="x"), "seed", "invalid_type")
    refused(lambda: chat(**greedy, max_tokens=5, max_completion_tokens=5), "max_tokens")
    refused(lambda: chat(**greedy, response_format={"type": "json_schema", "json_schema":
                                                     {"name": "x", "schema": {"type": 7}}}),
            "response_format")
    refused(lambda: comp(model=model, prompt="a", echo=True, logprobs=1), "logprobs")
    refused(lambda: comp(model=model, prompt="a", suffix="b"), "suffix", "unsupported_parameter")
    report["embeddings"] = refused(
        lambda: client.embeddings.create(model=model, input="hello"), "model", "model_not_supported")

    print(json.dumps({"ok": True, **report}))


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"openai_surface: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
