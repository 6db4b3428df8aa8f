import siamese


def test_every_public_name_is_listed_and_loads() -> None:
    assert sorted(siamese.__all__) == sorted(siamese._EXPORTS)
    for name in siamese.__all__:
        assert getattr(siamese, name) is not None, name
