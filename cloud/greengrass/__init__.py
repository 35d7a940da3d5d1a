"""cloud.greengrass: the Greengrass v2 side that needs no AWS account.

- :mod:`cloud.greengrass.recipe`: the recipe model and its one validator (size, versions, Nucleus Lite rules,
  IPC ``accessControl``), GDK projects and rendering; :mod:`cloud.aws.greengrass` publishes through it too
- :mod:`cloud.greengrass.build`: both components from a registered model version (``python -m cloud.greengrass
  build``), signing the bundle when given a key
- :mod:`cloud.greengrass.names`: component names, thing groups, deployment names, defined once

Deploying (publish, thing-group deployments, the rollout's Greengrass backend) is AWS code: :mod:`cloud.aws.greengrass`.
"""

from ..errors import ComponentBuildError, GreengrassError, RecipeError
from .build import BuildResult, build_components, build_wheel
from .cli import main
from .names import APP_COMPONENT, MODEL_COMPONENT, THING_GROUPS
from .recipe import (MAX_RECIPE_BYTES, PROJECTS_DIR, SUPPORTED_ARCHITECTURES, GreengrassProject, check_recipe,
                     check_version, component_pin, digest_b64, load_project, load_recipe, recipe_bytes,
                     recipe_variables, render_recipe, validate_recipe)

__all__ = [
    "APP_COMPONENT",
    "BuildResult",
    "ComponentBuildError",
    "GreengrassError",
    "GreengrassProject",
    "MAX_RECIPE_BYTES",
    "MODEL_COMPONENT",
    "PROJECTS_DIR",
    "RecipeError",
    "SUPPORTED_ARCHITECTURES",
    "THING_GROUPS",
    "build_components",
    "build_wheel",
    "check_recipe",
    "check_version",
    "component_pin",
    "digest_b64",
    "load_project",
    "load_recipe",
    "main",
    "recipe_bytes",
    "recipe_variables",
    "render_recipe",
    "validate_recipe",
]
