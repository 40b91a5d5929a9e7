"""A remote LRM: any OpenAI-compatible completions server (vLLM, SGLang, ``rankguide serve``).

The SRM must stay in-process (its step hidden states and steering need the model's internals;
vLLM and SGLang expose neither), but the LRM only ever writes steps and, for SpecReason and
TRIM, scores text: both are plain continuations a serving engine does well. So the LRM can live
on other GPUs behind a server, named ``http://host:port/v1#model-name``.

- :class:`RemoteModel` stands where a :class:`~rankguide_graph.backend.LoadedModel` would: the
  server's address and model, the pair's shared tokenizer (the remote model must use the SRM's
  tokenizer: token ids travel as they are), and an HTTP client with timeouts and retries.
- :class:`RemoteRunner` stands where a :class:`~rankguide_graph.backend.ModelRunner` would in the
  :class:`~rankguide_graph.backend.StepEngine`. Its "cache" is the token ids the server was last
  sent; a catch-up costs nothing locally, and ``decode`` sends the whole text as a token-id prompt
  (the server's prefix cache makes the shared prefix free, as the engine's KV cache does
  in-process). Steps end where the local stop rule says: the server is asked to stop at the
  delimiter tokens (``stop_token_ids``) and at ``"\\n\\n"`` (``stop``), and the returned ids are
  cut at the first stop the rule finds, so the text is exactly what the in-process LRM writes.
- Token-id prompts and outputs use vLLM's extensions (``return_token_ids``,
  ``stop_token_ids``, ``include_stop_str_in_output``, ``return_tokens_as_token_ids``), which
  ``rankguide serve`` implements too.

Connection errors, timeouts, 5xx answers and malformed JSON are retried with exponential
backoff; after the last try a :class:`RemoteLRMError` names the server, the request and the
cause. (The graph can instead hand the step to the SRM: ``lrm_fallback``.) A server that needs
a key gets ``Authorization: Bearer KEY`` (``lrm_api_key``, else ``$RANKGUIDE_LRM_API_KEY``); the
key is never put in a message, a repr or a log.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import torch
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from rankguide_graph.backend.runner import FeedResult
from rankguide_graph.backend.sampling import TokenSampler
from rankguide_graph.backend.stopping import StepStopTracker, StopReason, step_end
from rankguide_graph.errors import ConfigError, RankGuideError

TOKEN_ID_PREFIX = "token_id:"
"""How ``return_tokens_as_token_ids`` writes a token in logprobs (vLLM's format)."""


class RemoteLRMError(RankGuideError, ConnectionError):
    """The remote LRM server could not answer (after the retries), or answered nonsense."""


def is_remote(name: str | None) -> bool:
    """Whether a model name is a server address rather than a checkpoint."""
    return bool(name) and str(name).startswith(("http://", "https://"))


@dataclass(frozen=True)
class RemoteSpec:
    """Where the remote model is: ``http://host:port/v1#model-name``."""

    base_url: str
    """The API root, e.g. ``http://127.0.0.1:8001/v1``."""
    model: str | None
    """The served model name (``None``: the server's only model)."""

    @classmethod
    def parse(cls, name: str) -> RemoteSpec:
        """Split ``http://host:port/v1#model`` into the API root and the model name."""
        url, _, model = name.partition("#")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"remote model (={name!r}) must look like http://host:port/v1#model-name"
            )
        return cls(base_url=url.rstrip("/"), model=model or None)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Timeouts and retries of the remote calls."""

    timeout_s: float = 60.0
    """Seconds per request (connect, read and write each)."""
    retries: int = 3
    """Tries after the first one, on connection errors, timeouts, 5xx and malformed JSON."""
    backoff_s: float = 0.25
    """Wait before the first retry; doubled after each."""


API_KEY_ENV = "RANKGUIDE_LRM_API_KEY"
"""The environment variable a remote LRM's API key is read from when none is given."""


def resolve_api_key(given: str | None) -> str | None:
    """The key to send: ``given``, else :data:`API_KEY_ENV`'s value, else ``None``."""
    if given is not None:
        return given
    from_env = os.environ.get(API_KEY_ENV)
    if from_env is not None and not from_env.strip():
        raise ConfigError(
            f"${API_KEY_ENV} is set but empty: set it to the LRM server's key, or unset it to "
            "send none"
        )
    return from_env


class CompletionsClient:
    """``POST /completions`` and ``GET /models`` with retries; one per remote model."""

    def __init__(self, spec: RemoteSpec, retry: RetryPolicy, api_key: str | None = None) -> None:
        """Open a connection pool to ``spec.base_url`` (``api_key`` goes in every request)."""
        self.spec = spec
        self.retry = retry
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=spec.base_url + "/", timeout=retry.timeout_s, headers=headers
        )
        self._keyed = bool(api_key)

    def __repr__(self) -> str:
        """The server, never the key."""
        return f"CompletionsClient({self.spec.base_url!r}, keyed={self._keyed})"

    def models(self) -> list[dict[str, Any]]:
        """The server's model list (``data`` of ``GET /models``)."""
        body = self._call("GET", "models", None)
        data = body.get("data")
        if not isinstance(data, list):
            raise RemoteLRMError(f"{self.spec.base_url}/models answered without a 'data' list")
        return data

    def complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The first choice of a completion request (``model`` is filled in)."""
        body = self._call("POST", "completions", {"model": self.spec.model, **payload})
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise RemoteLRMError(
                f"{self.spec.base_url}/completions answered without choices: {_clip(body)}"
            )
        return choices[0]

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        url = f"{self.spec.base_url}/{path}"
        wait, cause = self.retry.backoff_s, ""
        for attempt in range(self.retry.retries + 1):
            if attempt:
                time.sleep(wait)
                wait *= 2
            try:
                response = self._http.request(method, path, json=payload)
            except httpx.HTTPError as err:  # refused, reset, timed out, closed mid-answer
                cause = f"{type(err).__name__}: {err}"
                continue
            if response.status_code >= 500:
                cause = f"HTTP {response.status_code}: {_clip(response.text)}"
                continue
            if response.status_code in (401, 403):
                sent = "the key sent was refused" if self._keyed else "no key was sent"
                raise RemoteLRMError(
                    f"{method} {url} was refused with HTTP {response.status_code} ({sent}): "
                    f"pass the server's key with --lrm-api-key (lrm_api_key) or ${API_KEY_ENV}"
                )
            if response.status_code >= 400:
                raise RemoteLRMError(
                    f"{method} {url} was refused with HTTP {response.status_code}: "
                    f"{_clip(response.text)}"
                )
            try:
                body = response.json()
            except json.JSONDecodeError:
                cause = f"malformed JSON: {_clip(response.text)}"
                continue
            if isinstance(body, dict):
                return body
            cause = f"a JSON {type(body).__name__}, not an object"
        raise RemoteLRMError(
            f"{method} {url} failed after {self.retry.retries + 1} tries ({cause}): check that "
            "the LRM server is up, or set lrm_fallback=True to let the SRM write those steps"
        )


@dataclass
class RemoteModel:
    """A model behind an OpenAI-compatible server, used where a loaded model would be."""

    spec: RemoteSpec
    tokenizer: PreTrainedTokenizerBase
    """The pair's shared tokenizer (the server's model must use the same)."""
    client: CompletionsClient = field(repr=False)
    max_context: int | None = None
    """The server's ``max_model_len`` when it reports one."""

    hidden_size = 0
    """No hidden states come back from a server."""
    num_layers = 0
    device = torch.device("cpu")
    """Where prompts are built (the ids travel as JSON)."""

    @classmethod
    def connect(
        cls,
        name: str,
        tokenizer: PreTrainedTokenizerBase,
        retry: RetryPolicy | None = None,
        api_key: str | None = None,
    ) -> RemoteModel:
        """Reach the server named by ``name`` and check it serves the model.

        ``api_key`` (``None``: :data:`API_KEY_ENV`, else none) is sent with every request.
        """
        spec = RemoteSpec.parse(name)
        client = CompletionsClient(spec, retry or RetryPolicy(), resolve_api_key(api_key))
        served = {str(m.get("id")): m for m in client.models() if isinstance(m, dict)}
        model = spec.model
        if model is None:
            if len(served) != 1:
                raise ConfigError(
                    f"{spec.base_url} serves {sorted(served)}: name one as {spec.base_url}#MODEL"
                )
            model = next(iter(served))
            spec = RemoteSpec(base_url=spec.base_url, model=model)
            client.spec = spec
        if model not in served:
            raise ConfigError(
                f"{spec.base_url} does not serve {model!r}; it serves {sorted(served)}"
            )
        limit = served[model].get("max_model_len")
        return cls(spec, tokenizer, client, int(limit) if isinstance(limit, int) else None)

    @property
    def name(self) -> str:
        """``base_url#model``, as given on the command line."""
        return f"{self.spec.base_url}#{self.spec.model}"

    def continuation(
        self,
        prompt: Sequence[int],
        max_tokens: int,
        *,
        stop_ids: Sequence[int] = (),
        stop: Sequence[str] = (),
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[int]:
        """The token ids the server writes after ``prompt``."""
        payload: dict[str, Any] = {
            "prompt": [int(t) for t in prompt],
            "max_tokens": int(max_tokens),
            "temperature": temperature,
            "top_p": top_p,
            "stop_token_ids": sorted(int(t) for t in stop_ids),
            "stop": list(stop),
            "include_stop_str_in_output": True,
            "skip_special_tokens": False,
            "return_token_ids": True,
        }
        if seed is not None:
            payload["seed"] = seed
        choice = self.client.complete(payload)
        ids = choice.get("token_ids")
        if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
            raise RemoteLRMError(
                f"{self.name} returned no token ids (the server must support vLLM's "
                f"return_token_ids): {_clip(choice)}"
            )
        return ids

    def top_logprobs(self, prompt: Sequence[int], k: int) -> list[tuple[int, float]]:
        """The ``k`` most likely next tokens after ``prompt`` and their log-probabilities."""
        choice = self.client.complete(
            {
                "prompt": [int(t) for t in prompt],
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": k,
                "return_tokens_as_token_ids": True,
            }
        )
        try:
            top = choice["logprobs"]["top_logprobs"][0]
            return sorted(
                ((_token_id(token), float(lp)) for token, lp in top.items()),
                key=lambda pair: -pair[1],
            )
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise RemoteLRMError(
                f"{self.name} returned no usable top_logprobs ({err}): {_clip(choice)}"
            ) from None

    def prompt_logprobs(self, prompt: Sequence[int], start: int) -> torch.Tensor:
        """``log p(prompt[i] | prompt[:i])`` for ``i >= start``, (n,) float32 (``echo``)."""
        choice = self.client.complete(
            {
                "prompt": [int(t) for t in prompt],
                "max_tokens": 1,
                "temperature": 0.0,
                "echo": True,
                "logprobs": 1,
                "return_tokens_as_token_ids": True,
            }
        )
        try:
            values = choice["logprobs"]["token_logprobs"][start : len(prompt)]
            tensor = torch.tensor([float(v) for v in values], dtype=torch.float32)  # (n,)
        except (KeyError, TypeError, ValueError) as err:
            raise RemoteLRMError(
                f"{self.name} returned no prompt logprobs for echo=True ({err}): {_clip(choice)}"
            ) from None
        if len(tensor) != len(prompt) - start:
            raise RemoteLRMError(
                f"{self.name} returned {len(tensor)} prompt logprobs, expected "
                f"{len(prompt) - start}"
            )
        return tensor


class RemoteRunner:
    """The engine's view of a remote model: a runner whose "cache" is what the server saw."""

    def __init__(self, remote: RemoteModel) -> None:
        """Drive ``remote`` a step at a time."""
        self.loaded = remote
        self.steering = None
        self.tokens_fed = 0
        """Tokens the server had to read past the shared prefix (what its prefix cache saves)."""
        self.forward_seconds = 0.0
        """Time spent waiting for the server."""
        self._seen: list[int] = []

    @property
    def name(self) -> str:
        """``base_url#model``."""
        return self.loaded.name

    @property
    def cached_len(self) -> int:
        """Positions of the text the server has been sent."""
        return len(self._seen)

    @property
    def next_logits(self) -> torch.Tensor | None:
        """Never held: a remote runner is read through ``decode`` and the scoring calls."""
        return None

    def reset(self, capacity: int | None = None) -> None:
        """Forget the text (a new run); ``capacity`` is the server's concern, not ours."""
        self._seen = []
        self.tokens_fed = 0
        self.forward_seconds = 0.0

    def truncate(self, length: int) -> None:
        """Roll the text back to ``length`` tokens."""
        del self._seen[length:]

    def feed(
        self,
        tokens: Sequence[int],
        *,
        capture: Sequence[int] = (),
        steer: Sequence[int] = (),
        token_logprobs: bool = False,
    ) -> FeedResult:
        """Note the new text; the server reads it with the next request (no hidden states)."""
        if token_logprobs:
            raise ValueError("a remote runner scores text with prompt_logprobs(), not feed()")
        self._seen.extend(int(t) for t in tokens)
        self.tokens_fed += len(tokens)
        return FeedResult(
            logits=torch.zeros(0),
            hidden=torch.zeros(len(capture), 0),  # (P, 0): a server returns no hidden states
            n_fed=len(tokens),
        )

    def decode(
        self,
        sampler: TokenSampler,
        tracker: StepStopTracker,
        max_new_tokens: int,
        on_token: Callable[[int], bool] | None = None,
    ) -> tuple[list[int], StopReason]:
        """One request for the whole step, cut where the local stop rule ends it."""
        rule, at_delimiter = tracker.rule, tracker.at_delimiter
        config = sampler.config
        started = time.perf_counter()
        try:
            ids = self.loaded.continuation(
                self._seen,
                max_new_tokens,
                stop_ids=sorted(rule.stop_ids(at_delimiter=at_delimiter)),
                stop=[rule.delimiter] if at_delimiter and rule.delimiter else [],
                temperature=config.temperature,
                top_p=config.top_p,
                seed=config.seed,
            )
        finally:
            self.forward_seconds += time.perf_counter() - started
        tokens: list[int] = []
        for token in ids[:max_new_tokens]:
            tokens.append(token)
            reason = step_end(tracker, token, on_token)
            if reason is not None:
                return tokens, reason
        if len(tokens) >= max_new_tokens:
            return tokens, StopReason.MAX_STEP_TOKENS
        if not tokens:
            raise RemoteLRMError(f"{self.name} wrote no token for a step")
        # The server stopped where the local rule does not (e.g. its own EOS): keep its end.
        return tokens, StopReason.EOS

    def prompt_logprobs(self, sequence: Sequence[int], start: int) -> torch.Tensor:
        """``log p`` of ``sequence[start:]`` given what precedes each token, (n,) float32."""
        started = time.perf_counter()
        try:
            return self.loaded.prompt_logprobs(sequence, start)
        finally:
            self.forward_seconds += time.perf_counter() - started


def _token_id(token: str) -> int:
    if not token.startswith(TOKEN_ID_PREFIX):
        raise ValueError(f"token {token!r} is not written as token_id:N")
    return int(token[len(TOKEN_ID_PREFIX) :])


def _clip(value: object, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = [
    "API_KEY_ENV",
    "CompletionsClient",
    "RemoteLRMError",
    "RemoteModel",
    "RemoteRunner",
    "RemoteSpec",
    "RetryPolicy",
    "is_remote",
]
