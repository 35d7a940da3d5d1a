"""Names the Greengrass side shares, each defined once: components, thing groups, deployment names and tags.

The component names are also in each GDK project's ``gdk-config.json`` (GDK reads them there);
``tests/greengrass/test_recipes.py`` pins that the two agree. The thing-group defaults are also the parameter
defaults of ``infra/iot.yaml`` (pinned by ``tests/cloud/aws/test_infra.py``).
"""

from __future__ import annotations

from ..store import PROJECT

__all__ = ["PROJECT", "MODEL_COMPONENT", "APP_COMPONENT", "THING_GROUPS", "STAGES", "deployment_name",
           "deployment_tags"]

MODEL_COMPONENT = "com.slmintents.IntentModel"
APP_COMPONENT = "com.slmintents.IntentService"
#: A thing group has one active deployment, so a staged rollout needs a group per stage (canary first).
THING_GROUPS = {"canary": f"{PROJECT}-canary", "fleet": f"{PROJECT}-fleet"}
STAGES = tuple(THING_GROUPS)


def deployment_name(target: str) -> str:
    """The deployment name for a stage or thing group: ``slm-intents-<target>``."""
    return f"{PROJECT}-{target}"


def deployment_tags(stage: str) -> dict[str, str]:
    return {"project": PROJECT, "stage": stage}
