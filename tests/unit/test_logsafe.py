from hpf.federation.logsafe import unexpected


def test_unexpected_names_type_and_place_but_not_the_message() -> None:
    try:
        raise ValueError("310101199001011234 balance 123456")
    except ValueError as exc:
        text = unexpected(exc)
    assert text.startswith("ValueError at test_logsafe.py:")
    assert "3101" not in text and "123456" not in text
