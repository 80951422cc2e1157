"""The one Markdown table writer (eval reports, paper tables, sweep results, the repro report)."""

from janus_jax.markdown import table


def test_a_pipe_inside_a_cell_stays_in_its_cell():
    assert table(["model", "score"], [["tiny|v2", 4.5], ["base", None]]) == [
        "| model | score |",
        "|---|---|",
        "| tiny\\|v2 | 4.5 |",
        "| base | None |",
    ]
