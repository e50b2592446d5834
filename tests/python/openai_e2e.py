"""End-to-end check of the Cocoon OpenAI endpoint with the official `openai` SDK.

Usage: openai_e2e.py BASE_URL CERT_PEM|none MODEL

With `none`, BASE_URL is a plain-HTTP local endpoint (cocoon-client proxy), which does the
attestation and TLS itself.

TLS is verified against exactly the guest's certificate (the one `cocoon-verify` checked
and wrote out), through whatever sits in between (the host agent relays ciphertext).
Prints one JSON line with what it measured; exits non-zero on the first failed check.
"""

import json
import ssl
import sys

import httpx2
import openai


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def main():
    base_url, cert, model = sys.argv[1:4]
    ctx = ssl.create_default_context(cafile=cert) if cert != "none" else True
    http = openai.DefaultHttpxClient(verify=ctx)
    client = openai.OpenAI(base_url=base_url, api_key="not-needed", http_client=http, max_retries=0)

    ids = [m.id for m in client.models.list().data]
    check(model in ids, f"model {model} not in /v1/models: {ids}")

    messages = [{"role": "user", "content": "Say hello in one short sentence."}]
    params = dict(model=model, messages=messages, max_tokens=24, temperature=0)

    # Non-streaming.
    full = client.chat.completions.create(**params)
    text = full.choices[0].message.content or ""
    check(text.strip() != "", f"empty completion: {full}")
    u = full.usage
    check(u.prompt_tokens > 0 and u.completion_tokens > 0, f"bad usage {u}")
    check(u.total_tokens == u.prompt_tokens + u.completion_tokens, f"total != sum: {u}")
    check(u.completion_tokens <= 24, f"more tokens than max_tokens: {u}")
    check(full.choices[0].finish_reason in ("stop", "length"), full.choices[0].finish_reason)
    if full.choices[0].finish_reason == "length":
        check(u.completion_tokens == 24, f"finish_reason length but {u.completion_tokens} tokens")

    # Streaming, with usage in a final chunk that has no choices.
    chunks = list(client.chat.completions.create(**params, stream=True, stream_options={"include_usage": True}))
    check(len(chunks) >= 3, f"too few chunks: {len(chunks)}")
    usage_chunks = [c for c in chunks if c.usage is not None]
    check(len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1], "usage must come once, in the last chunk")
    check(chunks[-1].choices == [], "the usage chunk must have no choices")
    check(chunks[0].choices[0].delta.role == "assistant", "first chunk must carry the role")
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    check(finish == [full.choices[0].finish_reason], f"finish reasons {finish}")
    su = chunks[-1].usage
    content_chunks = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    check(streamed.strip() != "", "empty streamed completion")
    # Same prompt, greedy decoding: both modes must count the same tokens.
    check(su.prompt_tokens == u.prompt_tokens, f"prompt tokens differ: stream {su} vs {u}")
    check(su.completion_tokens == u.completion_tokens, f"completion tokens differ: stream {su} vs {u}")
    check(su.total_tokens == su.prompt_tokens + su.completion_tokens, f"stream total != sum: {su}")
    check(content_chunks <= su.completion_tokens, f"{content_chunks} content chunks > {su.completion_tokens} tokens")
    check(streamed == text, f"greedy stream {streamed!r} != non-stream {text!r}")

    # Streaming without include_usage: no usage anywhere.
    plain = list(client.chat.completions.create(**params, stream=True))
    check(all(c.usage is None for c in plain), "usage sent without include_usage")

    # Errors, as OpenAI reports them.
    errors = {}
    try:
        client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=4)
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError as e:
        check(e.status_code == 404 and e.code == "model_not_found", f"{e.status_code} {e.code}")
        errors["unknown_model"] = e.code
    try:
        client.chat.completions.create(**params, extra_body={"bogus_parameter": 1})
        raise AssertionError("unknown parameter accepted")
    except openai.BadRequestError as e:
        check(e.code == "unknown_parameter" and e.param == "bogus_parameter", f"{e.code} {e.param}")
        errors["unknown_parameter"] = e.code
    try:
        client.chat.completions.create(model=model, messages=messages, max_tokens=100000)
        raise AssertionError("max_tokens above the limit accepted")
    except openai.BadRequestError as e:
        check(e.param == "max_tokens", f"param {e.param}")
        errors["max_tokens"] = e.code

    raw = httpx2.Client(verify=ctx, timeout=60)
    url = base_url.rstrip("/") + "/chat/completions"
    r = raw.post(url, content=b"{not json", headers={"content-type": "application/json"})
    body = r.json()
    check(r.status_code == 400 and body["error"]["type"] == "invalid_request_error", f"{r.status_code} {body}")
    errors["malformed_json"] = body["error"]["code"]
    r = raw.post(url, json={"model": model})
    body = r.json()
    check(r.status_code == 400 and body["error"]["param"] == "messages", f"{r.status_code} {body}")
    errors["missing_messages"] = body["error"]["code"]
    att = base_url.rstrip("/") + "/attestation"
    r = raw.post(att, json={})
    check(r.status_code == 400 and r.json()["error"]["param"] == "nonce", f"{r.status_code} {r.text}")
    r = raw.post(att, json={"nonce": "zz"})
    check(r.status_code == 400 and r.json()["error"]["code"] == "invalid_value", f"{r.status_code} {r.text}")
    r = raw.post(att, json={"nonce": "00" * 32})
    check(r.status_code == 200 and r.json()["object"] == "attestation" and r.json()["evidence"], f"{r.status_code}")
    errors["attestation_nonce"] = "checked"
    r = raw.get(base_url.rstrip("/") + "/nope")
    check(r.status_code == 404 and "error" in r.json(), f"{r.status_code}")

    print(json.dumps({
        "ok": True,
        "text": text,
        "usage": {"prompt": u.prompt_tokens, "completion": u.completion_tokens},
        "stream_chunks": len(chunks),
        "errors": errors,
    }))


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"openai_e2e: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
