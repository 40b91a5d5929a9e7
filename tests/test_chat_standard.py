"""The LangChain standard tests (langchain-tests) of ChatRankGuide, on a tiny random pair.

The random models produce gibberish, so tests that need a capable model (a semantically right
tool call, structured output content) are marked ``xfail`` with the reason; the machinery
(invoke, stream, async, batch, usage metadata, stop sequences, conversations) must pass.
"""

from __future__ import annotations

from typing import Any, Literal

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from rankguide_graph.chat import ChatRankGuide

# Small budgets keep each call well under a second on the tiny models. max_tokens is a standard
# parameter the unit tests set themselves, so only the integration tests add it.
BUDGET = dict(max_steps=3, max_step_tokens=16)
TINY = "tiny random model: its text is noise, so it cannot "
TOOL_CALL = TINY + "write a well-formed <tool_call> block for the right tool"
STRUCTURED = TINY + "write a tool call holding the requested structure"
MODEL_PARAMS = pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
SCHEMA_TYPES = pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _TinyPair:
    """Points ``chat_model_params`` at the session's tiny llama pair (``model_dirs``)."""

    _params: dict[str, Any] = {}

    @pytest.fixture(autouse=True)
    def _tiny_pair(self, model_dirs) -> None:
        pair = model_dirs["llama"]
        type(self)._params = {"srm": str(pair["srm"]), "lrm": str(pair["lrm"]), **BUDGET}

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatRankGuide

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return dict(self._params)

    @property
    def has_tool_choice(self) -> bool:
        return True  # the answer is made to open a <tool_call> (of the named tool)

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supported_usage_metadata_details(self) -> dict:
        return {"invoke": ["reasoning_output"], "stream": ["reasoning_output"]}

    @property
    def supports_model_override(self) -> bool:
        return False  # `model` names the pair; the checkpoints come from srm/lrm


class TestChatRankGuideUnit(_TinyPair, ChatModelUnitTests):
    pass


class TestChatRankGuideIntegration(_TinyPair, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {**self._params, "max_tokens": 8}

    def invoke_with_reasoning_output(self, *, stream: bool = False) -> AIMessage:
        model = ChatRankGuide(**self.chat_model_params)
        if not stream:
            return model.invoke("Add 5 and 9.")
        full = None
        for chunk in model.stream("Add 5 and 9."):
            full = chunk if full is None else full + chunk
        assert isinstance(full, AIMessage)
        return full

    @MODEL_PARAMS
    @pytest.mark.xfail(reason=TOOL_CALL)
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=TOOL_CALL)
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(reason=TOOL_CALL)
    def test_bind_runnables_as_tools(self, model: BaseChatModel) -> None:
        super().test_bind_runnables_as_tools(model)

    @pytest.mark.xfail(reason=TOOL_CALL)
    def test_tool_calling_with_no_arguments(self, model: BaseChatModel) -> None:
        super().test_tool_calling_with_no_arguments(model)

    @MODEL_PARAMS
    @pytest.mark.xfail(reason=TOOL_CALL)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(reason=TOOL_CALL)
    def test_unicode_tool_call_integration(
        self,
        model: BaseChatModel,
        *,
        tool_choice: str | None = None,
        force_tool_call: bool = True,
    ) -> None:
        super().test_unicode_tool_call_integration(
            model, tool_choice=tool_choice, force_tool_call=force_tool_call
        )

    @pytest.mark.xfail(reason=TINY + "write the arguments: the forced call's name is right")
    def test_tool_choice(self, model: BaseChatModel) -> None:
        super().test_tool_choice(model)

    @SCHEMA_TYPES
    @pytest.mark.xfail(reason=STRUCTURED)
    def test_structured_output(
        self, model: BaseChatModel, schema_type: Literal["pydantic", "typeddict", "json_schema"]
    ) -> None:
        super().test_structured_output(model, schema_type)

    @SCHEMA_TYPES
    @pytest.mark.xfail(reason=STRUCTURED)
    async def test_structured_output_async(
        self, model: BaseChatModel, schema_type: Literal["pydantic", "typeddict", "json_schema"]
    ) -> None:
        await super().test_structured_output_async(model, schema_type)

    @pytest.mark.xfail(reason=STRUCTURED)
    def test_structured_output_pydantic_2_v1(self, model: BaseChatModel) -> None:
        super().test_structured_output_pydantic_2_v1(model)

    @pytest.mark.xfail(reason=STRUCTURED)
    def test_structured_output_optional_param(self, model: BaseChatModel) -> None:
        super().test_structured_output_optional_param(model)
