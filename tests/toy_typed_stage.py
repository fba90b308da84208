"""A toy stage module with a typed schema, for the configuration tests (v2a/schema.py)."""

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from toy_stages import read_record, run  # noqa: F401  (the toy stage's behaviour)


class Params(BaseModel):
    size: Annotated[int, Field(ge=1)] = 4
    mode: Literal["fast", "exact"] = "exact"
    weights: str | None = None


class Runtime(BaseModel):
    batch_size: int = 2
    device: str = "cpu"
