"""``ChatRankGuide``: the RankGuide reasoning graph as a LangChain chat model.

A call renders the conversation with the pair's chat template, runs the compiled graph
(:func:`rankguide_graph.graph.build_graph`) with a :class:`~rankguide_graph.context.
RankGuideContext` built from the model's fields, and returns the final answer as the message
content; the reasoning, token usage, routing summary and (optionally) the per-step trace ride
along in the message's metadata. Weights load on the first call and are shared, through the
process-wide model pool, by every instance that names the same checkpoints.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from rankguide_graph.chat.async_runs import iterate_in_thread, run_in_thread
from rankguide_graph.chat.streaming import ContentStream
from rankguide_graph.chat.tool_calls import parse_tool_calls, tool_names
from rankguide_graph.errors import RankGuideError

if TYPE_CHECKING:
    from rankguide_graph.context import RankGuideContext
    from rankguide_graph.graph import ReasoningGraph
    from rankguide_graph.state import ReasoningInput

DEMO_MODEL = "demo"
"""The name reserved for the embedded, trained demo pair."""

_CONTEXT_FIELDS = (
    "srm", "lrm", "policy", "t_r1", "t_r2", "t_e", "window", "eps", "steering_vector", "alpha",
    "temperature", "seed", "max_steps", "max_step_tokens", "max_thinking_tokens", "compile",
)  # fmt: skip
"""Fields passed to :class:`RankGuideContext` under the same name (``max_tokens`` is renamed)."""
_LENGTH_STOPS = ("max_answer_tokens", "max_step_tokens", "context_full")
"""Answer stop reasons that mean the answer was cut at its token budget (``max_step_tokens``:
what checkpoints written before ``max_answer_tokens`` was reported say)."""


class ChatRankGuide(BaseChatModel):
    """RankGuide collaborative reasoning (a small and a large reasoning model) as a chat model.

    The small model (SRM) writes most reasoning steps; the routing policy hands a step to the
    large model (LRM) when the SRM's signals (tensor-train ranks of its step hidden states,
    next-token entropy) say it is about to fail; the answer is written after the reasoning.

    Setup:
        Install the package and have an SRM/LRM pair that shares a tokenizer (local directories
        or hub ids)::

            pip install rankguide-graph

    Instantiate:
        .. code-block:: python

            from rankguide_graph.chat import ChatRankGuide

            model = ChatRankGuide(
                srm="path/to/small-model",
                lrm="path/to/large-model",
                policy="rankguide",  # or glimprouter, specreason, trim, srm-only, lrm-only
                max_tokens=512,  # answer tokens
                temperature=0,  # greedy
                reasoning=True,  # reasoning into additional_kwargs["reasoning_content"]
            )

        Construction loads nothing: weights load on the first call, once per process.

    Invoke:
        .. code-block:: python

            message = model.invoke([("system", "Be brief."), ("human", "What is 3 + 4 * 2?")])
            message.content  # the final answer
            message.additional_kwargs["reasoning_content"]  # with reasoning=True
            message.usage_metadata  # prompt, reasoning + answer tokens
            message.response_metadata["routing"]  # steps, tokens per model, routing rules
            message.response_metadata["finish_reason"]  # stop, length or tool_calls
            model.invoke("...", max_tokens=64, temperature=0.7, seed=1)  # per-call settings

    Stream:
        .. code-block:: python

            for chunk in model.stream("What is 3 + 4 * 2?"):
                print(chunk.additional_kwargs.get("reasoning_content", ""), end="")
                print(chunk.content, end="")

        Each kept reasoning step is one chunk (only with ``reasoning=True``), with who wrote it
        and why in ``additional_kwargs["rankguide_steps"]`` (a one-item list ``[{"step",
        "model", "rule", "entropy", "r1", "r2"}]``, so merged chunks list every step). The
        answer then streams token by token as the answer model writes it; text is held back
        only while it could still change (surrounding whitespace, a possible start of a stop
        sequence, ``<tool_call>`` blocks), so the chunks add up to exactly what ``invoke``
        returns. The last chunk carries the rest of the content, the usage, the response
        metadata and any tool call chunks (a malformed ``<tool_call>`` block arrives as an
        invalid tool call whose ``args`` is its raw text, JSON-encoded). A stop sequence ends
        the answer's generation where it is written, in both paths.

    Tool calling:
        .. code-block:: python

            def add(a: int, b: int) -> int:
                \"\"\"Add two integers.\"\"\"
                return a + b

            message = model.bind_tools([add]).invoke("What is 3 + 4?")
            message.tool_calls  # parsed from <tool_call>{json}</tool_call> blocks

        The tools are rendered by the chat template (Qwen/Hermes templates render them).
        ``tool_choice="any"``/``"required"`` makes the answer open a ``<tool_call>`` block (of
        the only tool when there is one), a tool's name opens a call of that tool (the model
        writes the arguments), ``"none"`` hides the tools, ``"auto"`` lets the model choose.
        ``with_structured_output`` works through a required tool call.
    """

    model_config = ConfigDict(protected_namespaces=(), use_attribute_docstrings=True)

    srm: str | None = None
    """The small reasoning model: a local directory or a hub id."""
    lrm: str | None = None
    """The large reasoning model: a local directory, a hub id, or an OpenAI-compatible server
    ``http://host:port/v1#model-name`` (same tokenizer as the SRM)."""
    model: str | None = None
    """A name for the pair (reported as ``model_name``); ``"demo"`` is reserved for the embedded
    demo pair. ``None``: named after the two checkpoints."""
    policy: str = "rankguide"
    """Routing policy: rankguide, glimprouter, specreason, trim, srm-only, lrm-only, ..."""
    t_r1: int = 7
    """RankGuide: a window with ``r1 < t_r1`` is low-rank."""
    t_r2: int = 60
    """RankGuide: a window with ``r2 < t_r2`` is low-rank."""
    t_e: float = 0.9
    """RankGuide: route to the LRM when the SRM's next-token entropy is at least this (nats)."""
    window: int = 10
    """RankGuide: step states per rank window, and low-rank windows in a row for a collapse."""
    eps: float = 0.1
    """Relative error target of the TT-SVD that gives the ranks."""
    steering_vector: str | None = None
    """Path of a steering vector file for the SRM (``None``: no steering)."""
    alpha: float = 1.0
    """Steering strength."""
    max_tokens: int = 512
    """Tokens of the final answer (the run's ``max_answer_tokens``)."""
    temperature: float = 0.0
    """Sampling temperature; 0 decodes greedily."""
    seed: int | None = None
    """Sampler seed (a sampled run with a seed is reproducible)."""
    max_steps: int = 256
    """Reasoning steps before thinking is ended."""
    max_step_tokens: int = 512
    """Tokens per reasoning step."""
    max_thinking_tokens: int = 8192
    """Reasoning tokens before thinking is ended."""
    compile: bool = False
    """Decode through ``torch.compile`` over a static KV cache (CUDA graphs on CUDA); greedy
    output is unchanged. Worth it on GPUs; the first call compiles."""
    reasoning: bool = False
    """``False``: the message holds the answer only. ``True``: the reasoning text also goes
    into ``additional_kwargs["reasoning_content"]`` (streamed step by step)."""
    include_trace: bool = False
    """Put the full per-step trace (signals, decisions, drafts) in
    ``response_metadata["trace"]``."""
    stop: list[str] | None = None
    """Stop sequences: the answer is cut at the first occurrence of any of them."""
    streaming: bool = False
    """Whether ``invoke`` goes through the streaming path (callbacks see each chunk)."""
    lrm_api_key: SecretStr | None = Field(default=None, exclude=True)
    """Key of a remote LRM's server (``Authorization: Bearer KEY``); ``None`` reads
    RANKGUIDE_LRM_API_KEY. Kept out of reprs, dumps, traces and callbacks."""
    run_settings: dict[str, Any] = Field(default_factory=dict)
    """Further run settings of :class:`~rankguide_graph.context.RankGuideContext` that have no
    field here, e.g. ``{"device": "cuda", "top_p": 0.95, "lrm_fallback": True,
    "lrm_retries": 5}`` (a remote LRM's retries and SRM fallback)."""

    _pair_settings: dict[str, Any] = PrivateAttr(default_factory=dict)
    """Run settings of the embedded pair that have no field here (e.g. ``entropy_top_k``)."""

    # -- validation -----------------------------------------------------------------------------
    @field_validator("srm", "lrm", "steering_vector", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("run_settings")
    @classmethod
    def _known_run_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        from dataclasses import fields

        from rankguide_graph.context import RankGuideContext

        known = {f.name for f in fields(RankGuideContext)}
        own = set(_CONTEXT_FIELDS) | {"max_answer_tokens", "lrm_api_key"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"run_settings has unknown settings {unknown}: use names of RankGuideContext "
                f"({', '.join(sorted(known - own))})"
            )
        doubled = sorted(set(value) & own)
        if doubled:
            raise ValueError(
                f"run_settings names {doubled}, which are fields of ChatRankGuide: set "
                "them as ChatRankGuide(...) arguments instead"
            )
        return value

    @model_validator(mode="after")
    def _check_settings(self) -> ChatRankGuide:
        if self.model == DEMO_MODEL:
            self._use_demo_pair()
        if not self.srm or not self.lrm:
            raise ValueError(
                f"srm (={self.srm!r}) and lrm (={self.lrm!r}) must both name a model: pass "
                "ChatRankGuide(srm=PATH, lrm=PATH)"
            )
        self.run_context()  # every threshold and budget is checked now, before any call
        return self

    def _use_demo_pair(self) -> None:
        """Point at the embedded pair and take its settings, except those given explicitly."""
        from rankguide_graph.demo.pair import demo_settings

        if self.srm or self.lrm:
            raise ValueError(
                f"model='demo' selects the embedded pair: leave srm (={self.srm!r}) and lrm "
                f"(={self.lrm!r}) unset, or name your own pair without model='demo'"
            )
        try:
            settings = demo_settings()
        except RankGuideError as err:
            raise ValueError(str(err)) from None
        for name, value in settings.items():
            if name not in type(self).model_fields:
                self._pair_settings[name] = value
            elif name not in self.model_fields_set:
                setattr(self, name, value)

    def run_context(self, **overrides: Any) -> RankGuideContext:
        """The graph's run settings built from the fields (``overrides`` replace some)."""
        from rankguide_graph.context import RankGuideContext

        settings: dict[str, Any] = dict(self._pair_settings)
        settings.update(self.run_settings)
        settings.update({name: getattr(self, name) for name in _CONTEXT_FIELDS})
        settings["max_answer_tokens"] = self.max_tokens
        if self.lrm_api_key is not None:
            settings["lrm_api_key"] = self.lrm_api_key.get_secret_value()
        settings.update(overrides)
        return RankGuideContext(**settings)

    # -- LangChain plumbing ---------------------------------------------------------------------
    @property
    def lc_secrets(self) -> dict[str, str]:
        """Secret fields and their environment variables (LangChain's serialisation skips them)."""
        return {"lrm_api_key": "RANKGUIDE_LRM_API_KEY"}

    @property
    def _llm_type(self) -> str:
        return "rankguide"

    @property
    def model_name(self) -> str:
        """The name reported in ``response_metadata`` and traces."""
        from rankguide_graph.backend.remote import is_remote

        if self.model:
            return self.model
        lrm = self.lrm or ""
        lrm_name = lrm.partition("#")[2] or lrm if is_remote(lrm) else Path(lrm).name
        return f"{Path(self.srm or '').name}+{lrm_name}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            **{name: getattr(self, name) for name in _CONTEXT_FIELDS},
            "max_tokens": self.max_tokens,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "rankguide"
        params["ls_model_name"] = kwargs.get("model") or self.model_name
        params["ls_temperature"] = self.temperature
        params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable | BaseTool],
        *,
        tool_choice: str | dict | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: they are rendered by the chat template, calls parsed from the answer.

        Args:
            tools: LangChain tools, functions, pydantic models or OpenAI tool schemas.
            tool_choice: ``None``/``"auto"`` (the model chooses), ``"any"``/``"required"``/
                ``True`` (the answer is made to open a tool call), a tool's name or
                ``{"type": "function", "function": {"name": ...}}`` (a call of that tool),
                ``"none"``/``False`` (the tools are not shown to the model).
            **kwargs: Passed on to :meth:`bind`.
        """
        from langchain_core.utils.function_calling import convert_to_openai_tool

        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """The answer as ``schema``, through a forced tool call (LangChain's signature).

        A call the model left unfinished or malformed is an ``OutputParserException``: raised
        with ``include_raw=False``, in ``parsing_error`` with ``include_raw=True`` (LangChain's
        default parser would return ``parsed=None`` and no error).
        """
        from rankguide_graph.chat.structured import structured_output

        kwargs.pop("method", None)
        kwargs.pop("strict", None)
        if kwargs:
            raise ValueError(f"with_structured_output got unsupported arguments {kwargs}")
        llm = self.bind_tools(
            [schema],
            tool_choice="any",
            ls_structured_output_format={
                "kwargs": {"method": "function_calling"},
                "schema": schema,
            },
        )
        return structured_output(llm, schema, include_raw=include_raw)

    # -- generation -----------------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        inputs, context, tools = self._prepare(messages, stop, kwargs)
        out = _graph().invoke(inputs, context=context)
        finish = _finish_reason(out["totals"])
        message = AIMessage(
            content=out["answer"],  # cut at the stop sequences by the graph (answer_stop)
            usage_metadata=_usage(out["totals"]),
            response_metadata=self._metadata(out["totals"], finish, out["steps"]),
        )
        if self.reasoning:
            message.additional_kwargs["reasoning_content"] = out["reasoning"]
        if tools:
            _attach_tool_calls(message, tool_names(tools))
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # A thread per run (not the loop's few default ones): concurrent runs batch their passes.
        return await run_in_thread(lambda: self._generate(messages, stop, None, **kwargs))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        chunks = iterate_in_thread(lambda: self._stream(messages, stop, None, **kwargs))
        async for chunk in chunks:
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        inputs, context, tools = self._prepare(messages, stop, kwargs)
        stops = self._stops(stop)
        content = ContentStream(stops, tools=bool(tools))
        steps: list[dict[str, Any]] = []
        run_id: str | None = None  # set while the run is open
        try:
            for event in _graph().stream(inputs, context=context, stream_mode="custom"):
                kind = event.get("event") if isinstance(event, dict) else None
                if kind == "run":
                    run_id = event["run_id"]
                elif kind == "step":
                    steps.append(event["step"])
                    if self.reasoning:
                        chunk = _step_chunk(event["step"])
                        if run_manager:
                            run_manager.on_llm_new_token("", chunk=chunk)
                        yield chunk
                elif kind == "answer_delta":
                    released = content.push(event["text"])
                    if released:
                        chunk = ChatGenerationChunk(message=AIMessageChunk(content=released))
                        if run_manager:
                            run_manager.on_llm_new_token(released, chunk=chunk)
                        yield chunk
                elif kind == "answer":
                    run_id = None  # the answer node has closed the run
                    offered = tool_names(tools) if tools else None
                    chunk = self._last_chunk(event, steps, content, offered=offered)
                    if run_manager:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
        finally:
            if run_id is not None:  # the caller stopped reading mid-run: free its caches now
                from rankguide_graph.session import SESSIONS

                SESSIONS.close(run_id)

    def _last_chunk(
        self,
        event: dict[str, Any],
        steps: list[dict[str, Any]],
        content: ContentStream,
        *,
        offered: frozenset[str] | None,
    ) -> ChatGenerationChunk:
        """The rest of the content, the tool call chunks, usage and response metadata."""
        totals, answer = event["totals"], event["answer"]
        metadata = self._metadata(totals, _finish_reason(totals), steps)
        chunks = []
        if offered is not None:
            parsed = parse_tool_calls(answer, offered)
            answer = parsed.content
            if parsed.tool_calls:
                metadata["finish_reason"] = "tool_calls"
            # LangChain re-parses streamed chunks' args: a malformed block's raw text goes in
            # JSON-encoded, so it parses to a string and stays an invalid call.
            calls = [*parsed.tool_calls, *parsed.invalid_tool_calls]
            chunks = [
                tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
                for i, c in enumerate(calls)
            ]
        message = AIMessageChunk(
            content=content.rest(answer),
            usage_metadata=_usage(totals),
            response_metadata=metadata,
            tool_call_chunks=chunks,
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message)

    # -- helpers --------------------------------------------------------------------------------
    def _prepare(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[ReasoningInput, RankGuideContext, list[dict[str, Any]] | None]:
        from rankguide_graph.chat.messages import to_template_messages
        from rankguide_graph.chat.tool_calls import required_call_prefix
        from rankguide_graph.state import ReasoningInput

        tools = kwargs.get("tools") or None
        tool_choice = kwargs.get("tool_choice")
        if tool_choice in ("none", False):
            tools = None  # the model is not offered the tools at all
        overrides = {
            name: kwargs[name]
            for name in ("temperature", "top_p", "seed", "max_steps", "max_step_tokens")
            if kwargs.get(name) is not None
        }
        if kwargs.get("max_tokens") is not None:
            overrides["max_answer_tokens"] = kwargs["max_tokens"]
        overrides["answer_stop"] = self._stops(stop) or None
        context = self.run_context(**overrides)
        inputs = ReasoningInput(messages=to_template_messages(messages), tools=tools)
        if tools and tool_choice not in (None, "auto"):
            inputs["answer_prefix"] = required_call_prefix(
                tools, tool_choice, _chat_template(context)
            )
        return inputs, context, tools

    def _stops(self, stop: list[str] | None) -> list[str]:
        chosen = stop if stop is not None else self.stop
        return [s for s in chosen or [] if s]

    def _metadata(
        self, totals: dict[str, Any], finish: str, steps: list[dict[str, Any]]
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "model_name": self.model_name,
            "model_provider": "rankguide",
            "finish_reason": finish,
            "policy": self.policy,
            "routing": {
                key: totals.get(key)
                for key in (
                    "steps",
                    "steps_by_model",
                    "tokens",
                    "lrm_token_share",
                    "routing",
                    "answer_model",
                    "discarded_draft_tokens",
                )
            },
        }
        if self.include_trace:
            metadata["trace"] = list(steps)
        return metadata


def _step_chunk(step: dict[str, Any]) -> ChatGenerationChunk:
    """A reasoning step as a chunk: its text, who wrote it and why."""
    routing = {
        "step": step["index"],
        "model": step["model"],
        "rule": step["decision"]["rule"],
        **{k: step["signals"][k] for k in ("entropy", "r1", "r2")},
    }
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            additional_kwargs={"reasoning_content": step["text"], "rankguide_steps": [routing]},
        )
    )


def _chat_template(context: RankGuideContext) -> str:
    """The pair's chat template (loads the pair, as the run is about to)."""
    from rankguide_graph.session import POOL

    template = POOL.pair(context).srm.tokenizer.chat_template
    return template if isinstance(template, str) else ""


@lru_cache(maxsize=1)
def _graph() -> ReasoningGraph:
    """The compiled graph, built once per process (it holds no per-run state)."""
    from rankguide_graph.graph import build_graph

    return build_graph(name="ChatRankGuide")


def _finish_reason(totals: dict[str, Any]) -> Literal["stop", "length"]:
    """``length`` when the answer was cut at its token budget, else ``stop``."""
    return "length" if totals.get("answer_stop_reason") in _LENGTH_STOPS else "stop"


def _usage(totals: dict[str, Any]) -> UsageMetadata:
    """Prompt tokens in; reasoning plus answer tokens out."""
    prompt = int(totals.get("prompt_tokens", 0))
    reasoning = int(totals.get("reasoning_tokens", 0))
    output = reasoning + int(totals.get("answer_tokens", 0))
    return UsageMetadata(
        input_tokens=prompt,
        output_tokens=output,
        total_tokens=prompt + output,
        output_token_details={"reasoning": reasoning},
    )


def _attach_tool_calls(message: AIMessage, offered: frozenset[str]) -> None:
    """Move ``<tool_call>`` blocks of the content into the message's tool calls."""
    parsed = parse_tool_calls(message.text, offered)
    message.content = parsed.content
    message.tool_calls = parsed.tool_calls
    message.invalid_tool_calls = parsed.invalid_tool_calls
    if parsed.tool_calls:
        message.response_metadata["finish_reason"] = "tool_calls"
