"""The prompts are the protocol: compare them to PAPER.md to the character."""
import re

from conftest import shared_path

from alpagasus import prompts


def _blocks(text: str) -> list[str]:
    return [b.strip("\n") for b in re.findall(r"```\n(.*?)```", text, flags=re.S)]


def _inline(text: str, after: str) -> str:
    start = text.index(after)
    return re.search(r"`([^`]+)`", text[start:]).group(1)


def _unescape(s: str) -> str:
    return s.replace("\\n", "\n")


def test_rating_prompt_matches_paper():
    paper = shared_path("PAPER.md").read_text()
    assert prompts.RATING_SYSTEM == _inline(paper, "- System message:")
    user = _unescape(_blocks(paper)[0].strip())
    # The block shows the message with {dimension} and its trailing " \n\n".
    assert prompts.RATING_USER.rstrip("\n") == user.rstrip("\n")
    assert prompts.RATING_USER.endswith("bias. \n\n")


def test_pairwise_prompt_matches_paper():
    paper = shared_path("PAPER.md").read_text()
    assert prompts.PAIRWISE_SYSTEM == _inline(paper, "- System: ")
    user = _unescape([b for b in _blocks(paper) if b.strip().startswith("[Question]")][0].strip())
    assert prompts.PAIRWISE_USER.rstrip("\n") == user.rstrip("\n")
    assert prompts.PAIRWISE_CRITERIA == _unescape(_inline(paper, "criteria = "))


def test_alpaca_templates_match_paper():
    paper = shared_path("PAPER.md").read_text()
    block = [b for b in _blocks(paper) if b.startswith("Below is an instruction")][0]
    with_input, no_input = [_unescape(line) for line in block.splitlines()]
    assert prompts.ALPACA_PROMPT_INPUT == with_input
    assert prompts.ALPACA_PROMPT_NO_INPUT == no_input


def test_rating_messages_fill_fields_and_dimension():
    msgs = prompts.rating_messages("Add.", "2+2", "4", "helpfulness")
    assert msgs[0] == {"role": "system", "content": prompts.RATING_SYSTEM}
    assert msgs[1]["content"].startswith("###Instruction:\nAdd.\n\n### Input:\n2+2\n\n### Response:\n4\n\n")
    assert msgs[1]["content"].count("helpfulness") == 2 and "accuracy" not in msgs[1]["content"]


def test_versions_change_with_the_text(monkeypatch):
    assert len(prompts.RATING_PROMPT_VERSION) == 12
    assert prompts.RATING_PROMPT_VERSION != prompts.PAIRWISE_PROMPT_VERSION
    assert prompts._version(prompts.RATING_SYSTEM + " ", prompts.RATING_USER) != prompts.RATING_PROMPT_VERSION


def test_alpaca_prompt_picks_template():
    assert prompts.alpaca_prompt("Do it.").endswith("### Instruction:\nDo it.\n\n### Response:")
    assert "### Input:\nx\n\n" in prompts.alpaca_prompt("Do it.", "x")
    assert prompts.alpaca_prompt("Do", "x", "{instruction}|{input}") == "Do|x"
