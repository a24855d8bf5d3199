"""Binary minus in spec arithmetic (it once lexed as unary minus everywhere and never parsed)."""

import pytest

import cnnspec


def _channels(line: str) -> int:
    model = cnnspec.compile_text(f"input 8x8x3\n{line}\n")
    return model.nodes[-1].shape[-1]


@pytest.mark.parametrize(
    "line, channels",
    [
        ("conv 5 - 1 1x1", 4),
        ("conv 5-1 1x1", 4),
        ("conv (5 - 1) 1x1", 4),
        ("conv 2*3 - 1 1x1", 5),
        ("conv 8 - 2 - 1 1x1", 5),  # left-associative
        ("conv 2 - -1 1x1", 3),  # binary then unary
        ("conv --4 1x1", 4),
        ("conv 6 1x1 groups=4 - 1", 6),
    ],
)
def test_binary_minus_in_arguments(line, channels):
    assert _channels(line) == channels


def test_minus_in_repeat_count_and_block_parameters():
    model = cnnspec.compile_text(
        "input 8x8x3\nblock stage(n) { repeat n - 1 { conv n - 1 1x1 } }\nstage 4\n"
    )
    convs = [n for n in model.nodes if n.kind == "conv"]
    assert len(convs) == 3 and all(n.shape[-1] == 3 for n in convs)


def test_unary_minus_still_works_where_no_expression_precedes():
    model = cnnspec.compile_text("input 8x8x3\nreshape -1\n")
    assert model.nodes[-1].shape == (192,)
    with pytest.raises(cnnspec.SpecErrors) as info:
        cnnspec.compile_text("input 8x8x3\nconv 4 1x1 stride=-1\n")
    assert info.value.errors[0].code == "E205"
