#!/usr/bin/env python3
"""Streaming chat benchmark for tests/gpu/run.sh: N concurrent requests against an
OpenAI-compatible server; prints one JSON line with aggregate completion tokens/s, TTFT
(median, p90), request count and every non-2xx status seen. Uses httpx (TLS verification
off: the guest's RA-TLS certificate is self-signed; this measures speed, not trust)."""
import argparse
import asyncio
import json
import statistics
import sys
import time

import httpx


async def one(client, url, model, max_tokens, prompt):
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    ttft = None
    completion = 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return {"status": r.status_code, "ttft": None, "tokens": 0,
                    "error": r.text[:300]}
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            try:
                event = json.loads(line[6:])
            except json.JSONDecodeError:
                continue
            if "error" in event:
                return {"status": 599, "ttft": ttft, "tokens": completion,
                        "error": json.dumps(event)[:300]}
            choices = event.get("choices") or []
            if ttft is None and any((c.get("delta") or {}).get("content") for c in choices):
                ttft = time.perf_counter() - start
            usage = event.get("usage")
            if usage:
                completion = usage.get("completion_tokens", 0)
    return {"status": 200, "ttft": ttft, "tokens": completion, "error": None}


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--requests", type=int, default=0, help="default: 2 x concurrency")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--label", default="")
    a = p.parse_args()
    total = a.requests or 2 * a.concurrency
    prompt = "Write a long story about a lighthouse keeper and the sea."
    limits = httpx.Limits(max_connections=a.concurrency, max_keepalive_connections=a.concurrency)
    timeout = httpx.Timeout(600.0, connect=30.0)
    async with httpx.AsyncClient(verify=False, limits=limits, timeout=timeout) as client:
        sem = asyncio.Semaphore(a.concurrency)

        async def slot():
            async with sem:
                try:
                    return await one(client, a.url, a.model, a.max_tokens, prompt)
                except Exception as e:  # a dead server or a cut connection
                    return {"status": 598, "ttft": None, "tokens": 0, "error": repr(e)[:300]}

        start = time.perf_counter()
        results = await asyncio.gather(*(slot() for _ in range(total)))
        wall = time.perf_counter() - start
    tokens = sum(r["tokens"] for r in results)
    ttfts = sorted(r["ttft"] for r in results if r["ttft"] is not None)
    statuses = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    errors = [r["error"] for r in results if r["error"]][:3]
    out = {
        "label": a.label,
        "concurrency": a.concurrency,
        "requests": total,
        "completion_tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2) if wall > 0 else 0.0,
        "ttft_median_s": round(statistics.median(ttfts), 4) if ttfts else None,
        "ttft_p90_s": round(ttfts[int(0.9 * (len(ttfts) - 1))], 4) if ttfts else None,
        "statuses": statuses,
        "errors": errors,
    }
    print(json.dumps(out), flush=True)
    # 5xx or a dead connection is a failure; 429 is backpressure and is reported.
    bad = sum(n for s, n in statuses.items() if int(s) >= 500)
    sys.exit(3 if bad else 0)


if __name__ == "__main__":
    asyncio.run(main())
