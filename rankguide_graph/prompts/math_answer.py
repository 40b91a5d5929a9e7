r"""How a math problem is put to a reasoning model, per model family: where the answer goes.

Both DeepSeek-R1 and Qwen3 model cards recommend ending a math problem with the same instruction,
"Please reason step by step, and put your final answer within \boxed{}.", which is also what the
AIME / MATH-500 evaluations of both use; the grader reads the last ``\boxed{}``. The embedded demo
pair was trained on bare questions and answers on an ``Answer:`` line, so it takes the problem
as is.
"""

from __future__ import annotations

from rankguide_graph.errors import ConfigError

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

PROBLEM_TEMPLATES = {
    "plain": "{problem}",
    "deepseek-r1": "{problem}\n" + BOXED_INSTRUCTION.replace("{}", "{{}}"),
    "qwen3": "{problem}\n" + BOXED_INSTRUCTION.replace("{}", "{{}}"),
}
"""Template name -> format string with a ``{problem}`` field."""


def template_for(model: str) -> str:
    """The template name for a model path or hub id: by family, else the boxed instruction."""
    name = model.lower()
    if "qwen3" in name:
        return "qwen3"
    return "deepseek-r1"


def format_problem(problem: str, template: str) -> str:
    """``problem`` put in ``template`` (a name of :data:`PROBLEM_TEMPLATES`)."""
    if template not in PROBLEM_TEMPLATES:
        raise ConfigError(
            f"prompt template (={template!r}) is unknown: use one of {sorted(PROBLEM_TEMPLATES)}"
        )
    return PROBLEM_TEMPLATES[template].format(problem=problem)
