"""`predict --model` as given: file: URIs become their paths, and references MLflow would
misread are refused naming what was expected (tracking.models.checked_model_reference)."""

import pytest

from siamese.errors import SiameseInputError
from tracking.models import checked_model_reference


@pytest.mark.parametrize(
    "given,path",
    [
        ("file:///tmp/my%20run/best.pt", "/tmp/my run/best.pt"),
        ("file://localhost/tmp/best.pt", "/tmp/best.pt"),
        ("file:/tmp/best.pt", "/tmp/best.pt"),
        ("models:/siamese@champion", "models:/siamese@champion"),
        ("models:/siamese/3", "models:/siamese/3"),
        ("models:/m-0123abcd", "models:/m-0123abcd"),
        ("runs:/0123abcd/model", "runs:/0123abcd/model"),
        ("checkpoints/run/best.pt", "checkpoints/run/best.pt"),
    ],
)
def test_references_that_load(given: str, path: str) -> None:
    assert checked_model_reference(given) == path


@pytest.mark.parametrize(
    "given,expected",
    [
        ("file://otherhost/tmp/best.pt", "expected a local checkpoint as file:///ABSOLUTE/PATH.pt"),
        ("file://best.pt", "expected a local checkpoint as file:///ABSOLUTE/PATH.pt"),
        ("models:/", "expected models:/NAME@ALIAS, models:/NAME/VERSION or models:/m-ID"),
        ("models:/siamese", "e.g. models:/siamese/1 or models:/siamese@champion"),
    ],
)
def test_references_refused_say_what_was_expected(given: str, expected: str) -> None:
    with pytest.raises(SiameseInputError, match=r"^--model ") as refused:
        checked_model_reference(given)
    assert given in str(refused.value) and expected in str(refused.value)
