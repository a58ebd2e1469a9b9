import pytest
from hypothesis import given, strategies as st

from cnnviz.errors import CnnvizError, SelectionError
from cnnviz.select import select_indices

NAMES = [("conv1", "conv1_conv"), ("layer1.0.conv1", "conv2_block1_1_conv"), ("layer1.0.conv2", ""), ("layer2.0.conv1", "")]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("0", [0]),
        ("-1", [3]),
        ("1,3", [1, 3]),
        ("0:2", [0, 1]),
        ("::2", [0, 2]),
        ("-2:", [2, 3]),
        ("all", [0, 1, 2, 3]),
        ("layer1.*", [1, 2]),
        ("conv2_block1_1_conv", [1]),
        ("layer2.0.conv1", [3]),
        ("3,0,3", [3, 0]),
    ],
)
def test_selector_forms(spec, expected):
    assert select_indices(spec, 4, what="layer", names=NAMES) == expected


def test_several_specs_are_merged_without_repeats():
    assert select_indices(["0", "0:2", "-1"], 4) == [0, 1, 3]


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("4", "out of range: there are 4 layers (0..3, or -4..-1)"),
        ("-5", "out of range"),
        ("1::0", "malformed slice"),
        ("5:9", "selects no layers"),
        ("layr1.0.conv1", "did you mean 'layer1.0.conv1'"),
        ("1,,2", "empty term"),
        ("", "empty term"),
        ("nomatch*", "matches no layer"),
    ],
)
def test_selector_errors_name_the_problem(spec, fragment):
    with pytest.raises(SelectionError) as exc:
        select_indices(spec, 4, what="layer", names=NAMES)
    assert fragment in str(exc.value)
    assert exc.value.exit_code == 2


def test_names_are_not_accepted_for_plain_index_selectors():
    with pytest.raises(SelectionError, match="malformed channel selector"):
        select_indices("abc", 10, what="channel")


@given(st.text(max_size=20), st.integers(min_value=0, max_value=50))
def test_fuzz_selector_only_raises_our_error(spec, count):
    try:
        out = select_indices(spec, count, what="layer", names=NAMES[:count] + [("x", "")] * max(0, count - 4))
    except CnnvizError:
        return
    assert out and all(0 <= i < count for i in out) and len(set(out)) == len(out)


def test_python_ints_are_index_terms():
    import numpy as np

    assert select_indices([3, -1, np.int64(0)], 5, what="channel") == [3, 4, 0]
    assert select_indices(2, 5) == [2]
    with pytest.raises(SelectionError, match="channel index 9 out of range"):
        select_indices([9], 5, what="channel")
