"""docs/architecture.md shows the step table as the code has it."""
from pathlib import Path

from integration.workflow.steps import describe

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def test_the_architecture_page_shows_the_step_table_the_code_has():
    assert describe() in DOC.read_text(), "run: python -c 'from integration.workflow.steps import describe; print(describe())'"
