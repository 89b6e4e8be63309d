#!/usr/bin/env python3
"""Load benchmarks of `tq-gguf serve --engine llama-server` per cache config: a sweep of concurrent
streaming clients against 1, 2, 4 and 8 slots, or (--load N) N mixed requests on 8 slots; and how
many 4K-token slots each config fits in a memory budget.

Sweep (the default): for every (config, slots) it starts the server, lets `slots` clients each
send `--requests` streamed completions (greedy, `--tokens` tokens each, end of text ignored so
every request decodes the same length) and reports the aggregate decode rate over the wall time,
and the median and 95th percentile of the time to first token and of the time between tokens.

Load (--load N): one server per config with `--slots` slots (8 unless told), and the same N
requests for each config, drawn with `--seed`: prompts of 8..1500 tokens cut at random places from
git's release notes (the evaluation text), answers of 8..256 tokens asked as max_tokens, both
lengths log-uniform (as many requests of 8..90 tokens as of 90..1500: short ones dominate real
traffic, long ones fill the slots); a quarter each of chat and completion requests, streamed and
not; greedy, with end of text ignored, so every answer must be exactly max_tokens long. As many
clients as slots (`--clients`) send them in list order, each its next request once its last is
answered (a closed loop: every slot stays busy, nothing queues in the server). Per config: requests
sent, errors, p50/p99 end-to-end latency, p50/p99 time to first token (streamed requests: the
first event carrying a choice, which llama-server sends with the first token), and the generated
tokens of the answered requests over the wall time (first request sent to last answer), and per
CPU second the server used meanwhile (which other jobs on a shared machine inflate much less than
the wall time), each also as a ratio to the first config's.

A request is an error, and counts in no latency or rate, if: no HTTP answer within `--timeout`
seconds or the connection fails (timeout, connection); the status is not 200 (HTTP); the body or
an event is not the JSON the OpenAI API describes, or the server sends an error event (malformed,
server error); a stream ends without `data: [DONE]` or without a finish_reason or usage
(truncated); usage.completion_tokens differs from max_tokens, the finish_reason is not "length",
or llama-server's own timings count other tokens than its usage does (tokens); or the answer is
empty (empty).

    python tools/bench/bench_serve.py                           # sweep: SmolLM2, f16/f16, q8_0/q8_0, balanced
    python tools/bench/bench_serve.py MODEL --configs balanced --slots 1,8 --budget 8GiB --json out.json
    python tools/bench/bench_serve.py --load 200 --json load.json   # f16/f16 and balanced, 8 slots
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import itertools
import json
import math
import os
import random
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

from benchserver import post_json, served

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tq_gguf.analysis.evaltext import git_release_notes  # noqa: E402
from tq_gguf.gguf import ggufinfo, models  # noqa: E402
from tq_gguf.kv.cacheconfig import CacheConfig  # noqa: E402
from tq_gguf.kv.plan import format_size, parse_size  # noqa: E402

PROMPTS = ["The three primary colors are", "Once upon a time, in a small village,", "The capital of France is",
           "Water boils at", "A list of useful kitchen tools:", "The history of the bicycle begins",
           "To make bread, you need", "The largest planet in the solar system"]
BUDGET_CTX = 4096  # the slot size of the memory-budget column
SWEEP_CONFIGS, LOAD_CONFIGS = "f16/f16,q8_0/q8_0,balanced", "f16/f16,balanced"
TEXT_BYTES = 200_000  # of the release notes the load prompts are cut from (about 50k tokens)
TEMPLATE_ROOM = 64  # tokens a chat template may add to a prompt


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- sweep ----------------------------------------------------------------------------------------

def stream(url: str, prompt: str, n_tokens: int) -> tuple[float, list[float]]:
    """(seconds to the first token, seconds between each later token) of one streamed completion."""
    body = {"prompt": prompt, "max_tokens": n_tokens, "temperature": 0, "stream": True, "ignore_eos": True}
    request = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    stamps = []
    with urllib.request.urlopen(request, timeout=600) as response:
        for line in response:
            if line.startswith(b"data: ") and b'"text"' in line:
                chunk = json.loads(line[6:])
                if chunk["choices"][0]["text"]:
                    stamps.append(time.perf_counter())
    return stamps[0] - start, [b - a for a, b in zip(stamps, stamps[1:])]


def run_sweep(model: str, config: str, slots: int, requests: int, n_tokens: int, ctx: int, threads: int) -> dict:
    with served(model, config, ctx=ctx, slots=slots, threads=threads) as server:
        url = server.url
        stream(url, PROMPTS[0], 4)  # warm up
        ttft, gaps, lock = [], [], threading.Lock()

        def client(i: int) -> None:
            for r in range(requests):
                first, between = stream(url, PROMPTS[(i + r) % len(PROMPTS)], n_tokens)
                with lock:
                    ttft.append(first)
                    gaps.extend(between)

        start = time.perf_counter()
        workers = [threading.Thread(target=client, args=(i,)) for i in range(slots)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - start
    return {"config": config, "slots": slots, "requests": slots * requests, "tokens": slots * requests * n_tokens,
            "wall_s": wall, "tok_s": slots * requests * n_tokens / wall,
            "ttft_p50_ms": 1000 * statistics.median(ttft), "ttft_p95_ms": 1000 * percentile(ttft, 0.95),
            "token_p50_ms": 1000 * statistics.median(gaps), "token_p95_ms": 1000 * percentile(gaps, 0.95)}


# --- load: the request mix ------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """One request of the load: which endpoint, streamed or not, how long a prompt and answer."""

    index: int
    chat: bool           # /v1/chat/completions, else /v1/completions
    stream: bool
    prompt_tokens: int   # tokens of the text cut for the prompt (a chat template adds its own)
    max_tokens: int      # asked, with end of text ignored: the answer's exact length
    offset: float        # where the prompt starts in the text, as a share of the room before its end

    @property
    def kind(self) -> str:
        return f"{'chat' if self.chat else 'completion'}/{'stream' if self.stream else 'whole'}"


def log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return min(hi, max(lo, round(math.exp(rng.uniform(math.log(lo), math.log(hi))))))


def make_mix(n: int, seed: int, prompt_range: tuple[int, int], answer_range: tuple[int, int]) -> list[Request]:
    """`n` requests, the same for the same arguments: a quarter of each endpoint x streaming pair (in
    shuffled order), prompt and answer lengths log-uniform within their ranges (inclusive)."""
    rng = random.Random(seed)
    kinds = list(itertools.islice(itertools.cycle(itertools.product((False, True), repeat=2)), n))
    rng.shuffle(kinds)
    return [Request(i, chat, streamed, log_uniform(rng, *prompt_range), log_uniform(rng, *answer_range),
                    rng.random()) for i, (chat, streamed) in enumerate(kinds)]


def cut_prompts(mix: list[Request], tokens: list[int], detokenize: Callable[[list[int]], str]) -> list[str]:
    """Each request's prompt: its `prompt_tokens` tokens of the text, from its offset on."""
    prompts = []
    for r in mix:
        start = int(r.offset * (len(tokens) - r.prompt_tokens))
        prompts.append(detokenize(tokens[start:start + r.prompt_tokens]))
    return prompts


def mix_fingerprint(mix: list[Request], prompts: list[str]) -> str:
    payload = json.dumps([[asdict(r), p] for r, p in zip(mix, prompts)]).encode()
    return hashlib.sha256(payload).hexdigest()[:12]


def request_body(request: Request, prompt: str) -> dict:
    body = {"max_tokens": request.max_tokens, "temperature": 0, "ignore_eos": True, "stream": request.stream}
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    if request.chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


# --- load: answers and what counts as an error ----------------------------------------------------

@dataclass
class Reply:
    """What came back for one request."""

    status: int | None = None       # HTTP status; None: none came
    transport: str | None = None    # why no whole answer came: "timeout: ...", "connection: ..."
    detail: str = ""                # an error body's start
    malformed: str | None = None    # the first thing that was not the expected JSON or SSE
    server_error: str | None = None  # an error event inside a 200 stream
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int | None = None  # usage
    prompt_tokens: int | None = None      # usage
    predicted_n: int | None = None  # llama-server's own count of generated tokens, in its timings
    done: bool = False              # a stream's `data: [DONE]` came
    first_token_s: float | None = None
    latency_s: float | None = None


def _take_final(reply: Reply, event: dict) -> None:
    usage = event.get("usage")
    if usage:
        reply.completion_tokens = usage.get("completion_tokens")
        reply.prompt_tokens = usage.get("prompt_tokens")
    timings = event.get("timings")
    if timings and "predicted_n" in timings:
        reply.predicted_n = timings["predicted_n"]


def read_stream(lines: Iterable[bytes], chat: bool, reply: Reply, elapsed: Callable[[], float]) -> Reply:
    """Read an OpenAI server-sent-event stream into `reply` (the first choice's time by `elapsed`)."""
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith(b":"):  # event separator, comment / keep-alive
            continue
        if reply.done:
            reply.malformed = f"data after [DONE]: {line[:80]!r}"
            return reply
        if not line.startswith(b"data: "):
            reply.malformed = f"not an SSE data line: {line[:80]!r}"
            return reply
        data = line[6:]
        if data == b"[DONE]":
            reply.done = True
            continue
        try:
            event = json.loads(data)
            if "error" in event:
                reply.server_error = str(event["error"])[:200]
                return reply
            _take_final(reply, event)
            for choice in event["choices"]:
                if reply.first_token_s is None:
                    reply.first_token_s = elapsed()
                piece = choice["delta"].get("content") if chat else choice["text"]
                reply.text += piece or ""
                if choice.get("finish_reason"):
                    reply.finish_reason = choice["finish_reason"]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            reply.malformed = f"{type(e).__name__} {e} in {data[:80]!r}"
            return reply
    return reply


def read_body(body: bytes, chat: bool, reply: Reply) -> Reply:
    """Read a whole (not streamed) OpenAI answer into `reply`."""
    try:
        event = json.loads(body)
        choice = event["choices"][0]
        reply.text = (choice["message"]["content"] if chat else choice["text"]) or ""
        reply.finish_reason = choice.get("finish_reason")
        _take_final(reply, event)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        reply.malformed = f"{type(e).__name__} {e} in {body[:80]!r}"
    return reply


def classify(request: Request, reply: Reply) -> str | None:
    """Why `reply` is an error (its kind first, up to a colon), or None if it is a good answer."""
    if reply.transport:
        return reply.transport
    if reply.status != 200:
        return f"HTTP {reply.status}: {reply.detail}"
    if reply.server_error:
        return f"server error: {reply.server_error}"
    if reply.malformed:
        return f"malformed: {reply.malformed}"
    if request.stream and not reply.done:
        return "truncated: the stream ended without [DONE]"
    if reply.finish_reason is None:
        return "truncated: no finish_reason"
    if reply.completion_tokens is None:
        return "truncated: no usage"
    if reply.completion_tokens != request.max_tokens:
        return f"tokens: {reply.completion_tokens} generated, {request.max_tokens} asked"
    if reply.finish_reason != "length":
        return f"tokens: finish_reason {reply.finish_reason!r} with end of text ignored"
    if reply.predicted_n is not None and reply.predicted_n != reply.completion_tokens:
        return f"tokens: timings count {reply.predicted_n}, usage {reply.completion_tokens}"
    if not reply.text:
        return "empty: no text"
    return None


def error_kind(error: str) -> str:
    return error.split(":")[0]


def send(url: str, request: Request, prompt: str, timeout: float) -> Reply:
    path = "/v1/chat/completions" if request.chat else "/v1/completions"
    http_request = urllib.request.Request(url + path, data=json.dumps(request_body(request, prompt)).encode(),
                                          headers={"Content-Type": "application/json"})
    reply = Reply()
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(http_request, timeout=timeout) as response:
            reply.status = response.status
            if request.stream:
                read_stream(response, request.chat, reply, lambda: time.perf_counter() - start)
            else:
                read_body(response.read(), request.chat, reply)
    except urllib.error.HTTPError as e:
        reply.status = e.code
        reply.detail = e.read()[:200].decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        reply.transport = (f"timeout: nothing for {timeout:g} s" if isinstance(reason, TimeoutError)
                           else f"connection: {type(reason).__name__} {reason}")
    reply.latency_s = time.perf_counter() - start
    if reply.transport is None and reply.latency_s > timeout:
        reply.transport = f"timeout: {reply.latency_s:.0f} s, over {timeout:g} s"
    return reply


def drive(url: str, mix: list[Request], prompts: list[str], clients: int, timeout: float) -> tuple[list, float]:
    """Send every request, `clients` at a time in list order; (replies, start times), and the wall time."""
    replies: list[Reply | None] = [None] * len(mix)
    starts = [0.0] * len(mix)
    order = iter(range(len(mix)))
    lock = threading.Lock()
    t0 = time.perf_counter()

    def client() -> None:
        while True:
            with lock:
                i = next(order, None)
            if i is None:
                return
            starts[i] = time.perf_counter() - t0
            replies[i] = send(url, mix[i], prompts[i], timeout)

    workers = [threading.Thread(target=client) for _ in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return list(zip(replies, starts)), time.perf_counter() - t0


def summarize(config: str, mix: list[Request], answered: list[tuple[Reply, float]], wall: float) -> dict:
    errors = [classify(r, reply) for r, (reply, _) in zip(mix, answered)]
    good = [reply for (reply, _), e in zip(answered, errors) if e is None]
    latency = [r.latency_s for r in good]
    ttft = [r.first_token_s for r in good if r.first_token_s is not None]
    generated = sum(r.completion_tokens for r in good)
    return {
        "config": config, "requests": len(mix), "errors": sum(e is not None for e in errors),
        "errors_by_kind": dict(Counter(error_kind(e) for e in errors if e)),
        "wall_s": wall, "generated_tokens": generated, "tok_s": generated / wall,
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in good),
        "latency_p50_s": percentile(latency, 0.5), "latency_p99_s": percentile(latency, 0.99),
        "ttft_p50_s": percentile(ttft, 0.5), "ttft_p99_s": percentile(ttft, 0.99), "ttft_n": len(ttft),
        "per_request": [{**asdict(r), "start_s": start, "latency_s": reply.latency_s,
                         "first_token_s": reply.first_token_s, "completion_tokens": reply.completion_tokens,
                         "prompt_tokens_used": reply.prompt_tokens, "error": e}
                        for r, (reply, start), e in zip(mix, answered, errors)],
    }


def run_mix(model: str, configs: list[str], mix: list[Request], *, slots: int, clients: int, ctx: int,
            threads: int, timeout: float) -> tuple[list[dict], str]:
    prompts: list[str] = []
    rows = []
    for config in configs:
        with served(model, config, ctx=ctx, slots=slots, threads=threads) as server:
            url = server.url
            if not prompts:  # the model's tokenizer, whichever config serves it
                text = git_release_notes(TEXT_BYTES)
                tokens = post_json(url + "/tokenize", {"content": text})["tokens"]
                prompts = cut_prompts(mix, tokens, lambda t: post_json(url + "/detokenize", {"tokens": t})["content"])
            for warm in (Request(-1, False, False, 8, 4, 0.0), Request(-1, True, True, 8, 4, 0.0)):
                send(url, warm, PROMPTS[0], timeout)
            load_before, cpu_before = os.getloadavg(), server.cpu_s()
            answered, wall = drive(url, mix, prompts, clients, timeout)
            row = summarize(config, mix, answered, wall)
            row["server_cpu_s"] = server.cpu_s() - cpu_before
            row["tok_per_cpu_s"] = row["generated_tokens"] / row["server_cpu_s"]
            row["loadavg_before"], row["loadavg_after"] = load_before, os.getloadavg()
        rows.append(row)
        print(f"  {config}: {row['requests']} requests in {wall:.0f} s, {row['errors']} errors, server CPU "
              f"{row['server_cpu_s']:.0f} s; load average "
              f"{load_before[0]:.2f} before, {row['loadavg_after'][0]:.2f} after", file=sys.stderr, flush=True)
    return rows, mix_fingerprint(mix, prompts)


def print_mix(rows: list[dict], base: dict) -> None:
    def s(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    print(f"{'config':<16} {'sent':>5} {'errors':>6} {'latency p50':>11} {'p99':>6} {'TTFT p50':>9} {'p99':>6} "
          f"{'tok/s':>6} {'ratio':>6} {'CPU s':>6} {'tok/CPU s':>9} {'ratio':>6}")
    for r in rows:
        print(f"{r['config']:<16} {r['requests']:>5} {r['errors']:>6} {s(r['latency_p50_s']):>11} "
              f"{s(r['latency_p99_s']):>6} {s(r['ttft_p50_s']):>9} {s(r['ttft_p99_s']):>6} {r['tok_s']:>6.1f} "
              f"{r['tok_s'] / base['tok_s']:>5.2f}x {r['server_cpu_s']:>6.0f} {r['tok_per_cpu_s']:>9.2f} "
              f"{r['tok_per_cpu_s'] / base['tok_per_cpu_s']:>5.2f}x")
    print(f"(latencies in seconds; ratios to {base['config']}; CPU s: what the server used during the load, "
          f"which other jobs on the machine inflate much less than the wall time)")
    for r in rows:
        bad = [q for q in r["per_request"] if q["error"]]
        if bad:
            print(f"\n{r['config']}: {r['errors']} errors {r['errors_by_kind']}; the first:")
            for q in bad[:5]:
                print(f"  #{q['index']} {'chat' if q['chat'] else 'completion'} stream={q['stream']} "
                      f"prompt {q['prompt_tokens']} max_tokens {q['max_tokens']}: {q['error']}")


def length_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(":")
    if not (lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi)):
        raise argparse.ArgumentTypeError(f"expected LO:HI with 1 <= LO <= HI, got {text!r}")
    return int(lo), int(hi)


# --- memory budget --------------------------------------------------------------------------------

def slots_in_budget(info, config: CacheConfig, budget: int) -> int:
    """The most slots of BUDGET_CTX tokens whose KV cache fits `budget` bytes, as llama-server allocates it."""
    from tq_gguf.runtime.llamaserver import slot_plan  # deferred: tq_gguf.runtime loads the native build; --help needs none

    slots = 0
    while slots < 256 and slot_plan(info, config, True, slots + 1, BUDGET_CTX).kv_total <= budget:
        slots += 1
    return slots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=models.DEFAULT_MODEL)
    ap.add_argument("--configs", help=f"comma-separated [default: {SWEEP_CONFIGS}; with --load {LOAD_CONFIGS}, "
                                      "the first the base of the throughput ratio]")
    ap.add_argument("--slots", help="comma-separated slot counts [default: 1,2,4,8; with --load one count, 8]")
    ap.add_argument("--threads", type=int, default=1, help="llama-server's CPU threads [default: 1]")
    ap.add_argument("--ctx", type=int, help="context of each slot [default: 512; with --load 2048]")
    ap.add_argument("--budget", default="1GiB", help="memory for the KV cache alone")
    ap.add_argument("--json", type=Path, help="also write the results here")
    sweep = ap.add_argument_group("sweep")
    sweep.add_argument("--requests", type=int, default=2, help="requests per client")
    sweep.add_argument("--tokens", type=int, default=64, help="tokens per request")
    load = ap.add_argument_group("load")
    load.add_argument("--load", type=int, metavar="N", help="send N mixed requests instead of the sweep")
    load.add_argument("--clients", type=int, help="concurrent clients [default: one per slot]")
    load.add_argument("--seed", type=int, default=0, help="of the request mix [default: 0]")
    load.add_argument("--prompt-tokens", type=length_range, default=(8, 1500), metavar="LO:HI",
                      help="prompt lengths [default: 8:1500]")
    load.add_argument("--answer-tokens", type=length_range, default=(8, 256), metavar="LO:HI",
                      help="answer lengths, max_tokens [default: 8:256]")
    load.add_argument("--timeout", type=float, default=300, help="seconds a request may take [default: 300]")
    args = ap.parse_args()
    path = str(models.resolve(args.model))
    info = ggufinfo.read(path)
    budget = parse_size(args.budget)
    configs = (args.configs or (LOAD_CONFIGS if args.load else SWEEP_CONFIGS)).split(",")
    fits = {c: slots_in_budget(info, CacheConfig.parse(c), budget) for c in configs}

    if args.load:
        if not (args.slots or "8").isdigit():
            ap.error(f"--load takes one slot count, not {args.slots!r}")
        slots = int(args.slots or 8)
        clients = args.clients or slots
        ctx = args.ctx or 2048
        if args.prompt_tokens[1] + args.answer_tokens[1] + TEMPLATE_ROOM > ctx:
            ap.error(f"a slot of {ctx} tokens cannot hold a {args.prompt_tokens[1]}-token prompt, "
                     f"{TEMPLATE_ROOM} of chat template and a {args.answer_tokens[1]}-token answer: raise --ctx")
        mix = make_mix(args.load, args.seed, args.prompt_tokens, args.answer_tokens)
        rows, fingerprint = run_mix(path, configs, mix, slots=slots, clients=clients, ctx=ctx, threads=args.threads,
                                    timeout=args.timeout)
        kinds = Counter(r.kind for r in mix)
        print(f"{Path(path).name}: {len(mix)} requests (seed {args.seed}, list {fingerprint}: "
              f"{', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), prompts "
              f"{args.prompt_tokens[0]}..{args.prompt_tokens[1]} tokens (mean "
              f"{statistics.mean(r.prompt_tokens for r in mix):.0f}), answers {args.answer_tokens[0]}.."
              f"{args.answer_tokens[1]} (mean {statistics.mean(r.max_tokens for r in mix):.0f}); {clients} clients, "
              f"{slots} slots of {ctx} tokens, {args.threads} thread(s)")
        print_mix(rows, rows[0])
        result = {"mode": "load", "model": Path(path).name, "seed": args.seed, "mix": fingerprint,
                  "prompt_tokens": args.prompt_tokens, "answer_tokens": args.answer_tokens, "slots": slots,
                  "clients": clients, "ctx": ctx, "threads": args.threads, "timeout_s": args.timeout,
                  "rows": [{**r, "tok_s_vs_base": r["tok_s"] / rows[0]["tok_s"],
                            "tok_per_cpu_s_vs_base": r["tok_per_cpu_s"] / rows[0]["tok_per_cpu_s"]} for r in rows]}
    else:
        ctx = args.ctx or 512
        rows = [run_sweep(path, c, int(s), args.requests, args.tokens, ctx, args.threads)
                for c in configs for s in (args.slots or "1,2,4,8").split(",")]
        print(f"{Path(path).name}: {args.requests} streamed requests of {args.tokens} tokens per client, one client "
              f"per slot, slots of {ctx} tokens, {args.threads} thread(s)")
        print(f"{'config':<12} {'slots':>5} {'tok/s':>7} {'TTFT p50':>9} {'p95':>7} {'token p50':>10} {'p95':>7}  (ms)")
        for r in rows:
            print(f"{r['config']:<12} {r['slots']:>5} {r['tok_s']:>7.1f} {r['ttft_p50_ms']:>9.0f} "
                  f"{r['ttft_p95_ms']:>7.0f} {r['token_p50_ms']:>10.1f} {r['token_p95_ms']:>7.1f}")
        result = {"mode": "sweep", "rows": rows}
    print(f"\nslots of {BUDGET_CTX} tokens within {format_size(budget)} of KV cache (llama-server's allocation):")
    for c, n in fits.items():
        print(f"  {c:<12} {n}")
    if args.json:
        args.json.write_text(json.dumps({**result, "budget": budget, "slots_in_budget": fits}, indent=2) + "\n")


if __name__ == "__main__":
    main()
