"""Rule-system part of the configuration: objects (who/what/when/action) and rules, PMG-style."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RuleSystemConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
