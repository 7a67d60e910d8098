"""Reading an interaction payload field by field: a missing or mistyped field is named in the error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from facteur.errors import InvalidPayload


class Fields:
    """A JSON object whose fields are read with their expected type.

    A field that is required and missing, or present with the wrong type, raises
    :class:`facteur.errors.InvalidPayload` naming its path (``data.components[0].custom_id``).
    A ``null`` counts as missing.
    """

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        self._data = data
        self._path = path

    def name(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def string(self, key: str) -> str:
        value = self.optional_string(key)
        if value is None:
            raise InvalidPayload(f"field {self.name(key)} is missing")
        return value

    def optional_string(self, key: str) -> str | None:
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidPayload(f"field {self.name(key)} must be a string")
        if not _utf8(value):
            raise InvalidPayload(f"field {self.name(key)} is not valid Unicode text")
        return value

    def integer(self, key: str) -> int:
        value = self.optional_integer(key)
        if value is None:
            raise InvalidPayload(f"field {self.name(key)} is missing")
        return value

    def optional_integer(self, key: str) -> int | None:
        value = self._data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidPayload(f"field {self.name(key)} must be an integer")
        return value

    def object(self, key: str) -> Fields:
        value = self.optional_object(key)
        if value is None:
            raise InvalidPayload(f"field {self.name(key)} is missing")
        return value

    def optional_object(self, key: str) -> Fields | None:
        value = self._data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise InvalidPayload(f"field {self.name(key)} must be an object")
        return Fields(value, self.name(key))

    def objects(self, key: str) -> list[Fields]:
        """A list of objects; missing is an empty list."""
        items = self._list(key)
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise InvalidPayload(f"field {self.name(key)}[{index}] must be an object")
        return [Fields(item, f"{self.name(key)}[{index}]") for index, item in enumerate(items)]

    def strings(self, key: str) -> list[str]:
        """A list of strings; missing is an empty list."""
        items = self._list(key)
        for index, item in enumerate(items):
            if not isinstance(item, str) or not _utf8(item):
                raise InvalidPayload(f"field {self.name(key)}[{index}] must be a string")
        return list(items)

    def _list(self, key: str) -> list[Any]:
        value = self._data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise InvalidPayload(f"field {self.name(key)} must be a list")
        return value


def _utf8(text: str) -> bool:
    """Whether the text can be encoded (JSON allows lone surrogates, which protobuf and HTTP refuse)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
