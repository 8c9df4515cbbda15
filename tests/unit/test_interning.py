"""interning.shared: an equal copy whose strings are one object across copies."""

from __future__ import annotations

from decimal import Decimal

from tgi_operator.interning import shared


def test_the_copy_is_equal_and_its_strings_are_shared_between_copies() -> None:
    def tree(name: str) -> dict:  # strings built at run time, as JSON decoding and protobuf reads make them
        image = "".join(["us-docker.pkg.dev/", "tgi:", "2.4"])
        return {"labels": {"name": name, "managed-by": "".join(["tgi-", "operator"])},
                "args": ["".join(["--model-id=", "org/model"])], "env": [("".join(["HF_", "HUB"]), "1")],
                "image": image, "limits": {"cpu": Decimal("8")}, "port": 8080}

    first, second = tree("a"), tree("b")
    a, b = shared(first), shared(second)
    assert a == first and b == second
    assert type(a["args"]) is list and type(a["env"][0]) is tuple  # the copy keeps each container's type
    assert a["image"] is b["image"] and a["args"][0] is b["args"][0] and a["env"][0][0] is b["env"][0][0]
    assert a["labels"]["managed-by"] is b["labels"]["managed-by"]
    assert first["image"] is not second["image"]  # the originals were two strings
