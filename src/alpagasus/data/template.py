"""How a record becomes the prompt a model is trained on and answers: Stanford Alpaca's templates
(PAPER.md section 2), or a config's own (the offline miniature's short one)."""

from __future__ import annotations

ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)


def alpaca_prompt(instruction: str, input: str = "", template: str | None = None) -> str:
    """The training/generation prompt for one example.

    With ``template`` None this is Stanford Alpaca's pair of templates (input / no input).
    A custom template (the offline miniature's short one) gets ``{instruction}`` and ``{input}``.
    """
    if template is not None:
        return template.format(instruction=instruction, input=input)
    if input:
        return ALPACA_PROMPT_INPUT.format(instruction=instruction, input=input)
    return ALPACA_PROMPT_NO_INPUT.format(instruction=instruction)
