"""llama.cpp's side of the check, run in a subprocess (`python -m compressor.export.probe` < request.json).

A subprocess because llama.cpp aborts the whole process on a file it cannot load (e.g. a tensor of an unexpected
shape): the export then reports the error instead of dying. It loads the GGUF in xllamacpp (llama-server
in-process) and prints one JSON line: for each prefix ids[:i] (i from `start`), the top token and its
log-probability; the greedy continuation of ids[:start]; and, with "text" (and "spacing"), how the GGUF's own
tokenizer splits it.

With "image" (a base64 PNG) and "prompt" (text with one `<__media__>`) in the request it asks the image question
instead, through llama-server's own /completion endpoint (its Python `handle_completions` takes no image): the
greedy answer's token ids, the log-probability of each (null where llama-server leaves it out: a token that ends
inside a UTF-8 character), and how many prompt tokens llama.cpp evaluated (text plus image embeddings).
$LLAMA_MEDIA_MARKER must be `<__media__>` (llama-server picks a random marker otherwise).
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    request = json.loads(sys.stdin.read())
    import xllamacpp as xl

    params = xl.CommonParams()
    params.model.path = request["model"]
    if request.get("mmproj"):
        params.mmproj.path = request["mmproj"]
    params.n_ctx = max(256, len(request["ids"]) + 64, request.get("n_ctx") or 0)
    params.n_parallel = 1
    params.cpuparams.n_threads = request.get("threads", 2)
    params.cpuparams_batch.n_threads = request.get("threads", 2)
    params.warmup = False
    server = xl.Server(params)
    if request.get("image"):
        print(json.dumps(_image_answer(server, request)))
        return 0
    ids, start = request["ids"], request["start"]
    top: list[list] = []
    for i in range(start, len(ids)):
        answer = server.handle_completions(
            {
                "prompt": ids[:i],
                "n_predict": 1,
                "temperature": 0,
                "n_probs": 1,
                "cache_prompt": True,
                "ignore_eos": True,
                "return_tokens": True,
                "verbose": True,  # the token ids are in the response's __verbose part
            }
        )
        tokens = (answer.get("__verbose") or {}).get("tokens")
        if "choices" not in answer or not tokens:
            print(json.dumps({"error": answer, "prefix": i}))
            return 1
        # the top of the model's own distribution: the sampled token never is the end-of-turn token (ignore_eos
        # masks it), but top_logprobs come from the raw logits. llama-server leaves out a token that ends inside a
        # UTF-8 character: then the sampled token, without its log-probability
        sampled = ((answer["choices"][0].get("logprobs") or {}).get("content") or [{}])[0]
        best = (sampled.get("top_logprobs") or [{}])[0]
        if "id" in best:
            top.append([best["id"], best.get("logprob")])
        else:
            top.append([tokens[0], None])
    greedy = server.handle_completions(
        {
            "prompt": ids[:start],
            "n_predict": request.get("greedy", 8),
            "temperature": 0,
            "n_probs": 1,
            "cache_prompt": False,
            "ignore_eos": True,
            "return_tokens": True,
            "verbose": True,
        }
    )
    tokens = (greedy.get("__verbose") or {}).get("tokens") or []
    print(
        json.dumps(
            {
                "top": top,
                "greedy": tokens,
                "tokenized": tokenize(server, request.get("text")),
                "tokenized_spacing": tokenize(server, request.get("spacing")),
            }
        )
    )
    return 0


def tokenize(server, text: str | None, add_special: bool = False) -> list[int] | None:
    """llama-server's /tokenize of `text`: the GGUF's own tokenizer; `add_special` adds BOS etc. as
    llama-perplexity does."""
    import urllib.request

    if text is None:
        return None
    url = server.listening_address.rstrip("/") + "/tokenize"
    body = json.dumps({"content": text, "add_special": add_special}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, body, {"Content-Type": "application/json"})) as r:
        return [t if isinstance(t, int) else t["id"] for t in json.loads(r.read())["tokens"]]


def _image_answer(server, request: dict) -> dict:
    import urllib.request

    body = {
        "prompt": {"prompt_string": request["prompt"], "multimodal_data": [request["image"]]},
        "n_predict": request.get("greedy", 8),
        "temperature": 0,
        "n_probs": 1,
        "cache_prompt": False,
        "return_tokens": True,
    }
    url = server.listening_address.rstrip("/") + "/completion"
    post = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(post, timeout=600) as answer:
        result = json.loads(answer.read())
    tokens = result["tokens"]
    logprobs: list[float | None] = [None] * len(tokens)
    at = 0
    for entry in (
        result.get("completion_probabilities") or []
    ):  # one per token, but none for a split character
        while at < len(tokens) and tokens[at] != entry.get("id"):
            at += 1
        if at < len(tokens):
            logprobs[at] = entry.get("logprob")
            at += 1
    return {"tokens": tokens, "logprobs": logprobs, "prompt_tokens": result.get("tokens_evaluated")}


if __name__ == "__main__":
    raise SystemExit(main())
